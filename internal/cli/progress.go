package cli

import (
	"io"
	"sync"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

func termIsTerminal(fd int) bool { return term.IsTerminal(fd) }

func termReadPassword(fd int) ([]byte, error) { return term.ReadPassword(fd) }

// progress returns a callback that drives a progress bar on stderr when it
// is a terminal and enabled, and nil otherwise, plus a function that
// finishes the bar.
func progress(stderr io.Writer, enabled bool, what string) (func(done, total int64), func()) {
	if !enabled || !isTerminal(stderr) {
		return nil, func() {}
	}
	var (
		mu  sync.Mutex
		bar *progressbar.ProgressBar
	)
	update := func(done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		if bar == nil {
			bar = progressbar.NewOptions64(total,
				progressbar.OptionSetWriter(stderr),
				progressbar.OptionSetDescription(what),
				progressbar.OptionShowBytes(true),
				progressbar.OptionSetWidth(30),
				progressbar.OptionThrottle(100_000_000),
				progressbar.OptionShowCount(),
				progressbar.OptionClearOnFinish(),
			)
		}
		bar.Set64(done)
	}
	finish := func() {
		mu.Lock()
		defer mu.Unlock()
		if bar != nil {
			bar.Finish()
		}
	}
	return update, finish
}
