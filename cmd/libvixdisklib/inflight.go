package main

import "sync"

// inflight counts a handle's asynchronous requests by the epoch of Wait
// they started in, so that a Wait returns once every request started
// before it has completed while other threads go on starting new ones.
// (A sync.WaitGroup may not be added to from zero while another thread
// waits on it: VixDiskLib_Wait on one thread and ReadAsync on another
// made it panic.)
type inflight struct {
	mu     sync.Mutex
	cond   sync.Cond
	epoch  uint64
	counts map[uint64]int // requests not yet completed, by epoch
}

// start counts a new request and returns its epoch, for done.
func (f *inflight) start() uint64 {
	f.mu.Lock()
	if f.counts == nil {
		f.counts = make(map[uint64]int)
	}
	e := f.epoch
	f.counts[e]++
	f.mu.Unlock()
	return e
}

// done marks a request of epoch e completed.
func (f *inflight) done(e uint64) {
	f.mu.Lock()
	if f.counts[e]--; f.counts[e] <= 0 {
		delete(f.counts, e)
		if f.cond.L != nil {
			f.cond.Broadcast()
		}
	}
	f.mu.Unlock()
}

// wait returns when every request started before the call has completed;
// requests started meanwhile belong to a later epoch and are not waited
// for.
func (f *inflight) wait() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cond.L == nil {
		f.cond.L = &f.mu
	}
	target := f.epoch
	f.epoch++
	for f.pendingUpTo(target) {
		f.cond.Wait()
	}
}

func (f *inflight) pendingUpTo(target uint64) bool {
	for e := range f.counts {
		if e <= target {
			return true
		}
	}
	return false
}
