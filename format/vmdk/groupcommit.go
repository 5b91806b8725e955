package vmdk

import (
	"sync"
	"sync/atomic"
)

// groupCommit serializes an extent's metadata write-back: two flushes
// writing the same table out of order would leave the older copy on disk.
// A flush that arrives while another runs waits, and returns at once if a
// write-back that began after it arrived has succeeded meanwhile (group
// commit). Holding mu also keeps write-back out while metadata moves.
type groupCommit struct {
	mu    sync.Mutex
	begun atomic.Uint64 // write-backs that have taken their tables
	ok    uint64        // the last write-back that succeeded; guarded by mu
}

// flush runs writeBack (with mu held) unless a write-back that began after
// this call arrived has already succeeded.
func (g *groupCommit) flush(writeBack func() error) error {
	arrived := g.begun.Load()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ok > arrived {
		return nil
	}
	n := g.begun.Add(1)
	err := writeBack()
	if err == nil {
		g.ok = n
	}
	return err
}
