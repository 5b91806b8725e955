package cli

import (
	"fmt"
	"io"
	"sync"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

func termIsTerminal(fd int) bool { return term.IsTerminal(fd) }

func termReadPassword(fd int) ([]byte, error) { return term.ReadPassword(fd) }

// progress returns a callback for -p that reports on stderr, plus a
// function that finishes the report. On a terminal it drives a progress
// bar. Elsewhere (a pipe, a log file) it prints what qemu-img -p prints
// there: "    (12.34/100%)" records ended by "\r", one whenever another
// percent is done, and a final "\n". Without -p the callback is nil.
func progress(stderr io.Writer, enabled bool, what string) (func(done, total int64), func()) {
	if !enabled {
		return nil, func() {}
	}
	if !isTerminal(stderr) {
		return percentProgress(stderr)
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

// percentProgress prints qemu-img's progress records. The first, 0.00, is
// printed at once; finish prints 100.00 only when the job got there.
func percentProgress(w io.Writer) (func(done, total int64), func()) {
	var mu sync.Mutex
	last := 0.0
	fmt.Fprintf(w, "    (%3.2f/100%%)\r", last)
	update := func(done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		p := 100.0
		if total > 0 {
			p = float64(done) * 100 / float64(total)
		}
		if p-last >= 1 || (p == 100 && last < 100) {
			last = p
			fmt.Fprintf(w, "    (%3.2f/100%%)\r", p)
		}
	}
	finish := func() {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprint(w, "\n")
	}
	return update, finish
}
