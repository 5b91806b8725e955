package ext4

import (
	"container/list"
	"sync"
)

// lru is a mutex-guarded least-recently-used cache whose size is counted
// in units the caller chooses (entries, bytes): an entry of cost c counts
// c against the budget.
type lru[K comparable, V any] struct {
	mu     sync.Mutex
	budget int
	used   int
	ll     list.List
	m      map[K]*list.Element
}

type lruEntry[K comparable, V any] struct {
	key  K
	val  V
	cost int
}

func newLRU[K comparable, V any](budget int) *lru[K, V] {
	return &lru[K, V]{budget: budget, m: make(map[K]*list.Element)}
}

func (c *lru[K, V]) get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[k]; ok {
		c.ll.MoveToFront(e)
		return e.Value.(*lruEntry[K, V]).val, true
	}
	var zero V
	return zero, false
}

// add stores v under k unless it alone exceeds the budget; older entries
// are evicted to make room.
func (c *lru[K, V]) add(k K, v V, cost int) {
	if cost > c.budget {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[k]; ok {
		old := e.Value.(*lruEntry[K, V])
		c.used += cost - old.cost
		old.val, old.cost = v, cost
		c.ll.MoveToFront(e)
	} else {
		c.m[k] = c.ll.PushFront(&lruEntry[K, V]{k, v, cost})
		c.used += cost
	}
	for c.used > c.budget {
		e := c.ll.Back()
		old := e.Value.(*lruEntry[K, V])
		c.ll.Remove(e)
		delete(c.m, old.key)
		c.used -= old.cost
	}
}
