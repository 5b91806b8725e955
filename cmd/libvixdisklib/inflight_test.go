package main

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestInflightWait has goroutines start and finish requests without
// pause while others wait: every wait must return, and only after every
// request started before it has finished.
func TestInflightWait(t *testing.T) {
	var f inflight
	var seq atomic.Int64 // requests started
	finished := make([]atomic.Bool, 1<<16)
	stop := make(chan struct{})
	var workers sync.WaitGroup
	for range 4 {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				e := f.start()
				n := seq.Add(1) - 1
				if n >= int64(len(finished)) {
					f.done(e)
					return
				}
				go func() {
					time.Sleep(time.Duration(n%7) * 10 * time.Microsecond)
					finished[n].Store(true)
					f.done(e)
				}()
			}
		}()
	}
	var waiters sync.WaitGroup
	for range 3 {
		waiters.Add(1)
		go func() {
			defer waiters.Done()
			for range 50 {
				// Requests numbered below before had started when wait
				// began (start runs before the number is taken, so the
				// bound is conservative).
				before := seq.Load()
				f.wait()
				for i := range min(before, int64(len(finished))) {
					if !finished[i].Load() {
						t.Errorf("wait returned before request %d of %d had finished", i, before)
						return
					}
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { waiters.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("a wait did not return while requests kept starting")
	}
	close(stop)
	workers.Wait()
	f.wait()
	if len(f.counts) != 0 {
		t.Errorf("counts left after the last wait: %v", f.counts)
	}
}
