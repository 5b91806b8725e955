package disk

import "sync/atomic"

// fder is a file with a descriptor: *os.File, or a wrapper around one.
type fder interface{ Fd() uintptr }

// DefaultWriteBehindWindow is how many bytes a file takes in through a
// [WriteBehind] before the write-back of its dirty pages is started.
const DefaultWriteBehindWindow = 8 << 20

// WriteBehind starts the write-back of the files it wraps while they are
// being written, instead of leaving it all to the final sync. A bulk
// writer (a convert, a clone, a restore) that syncs once at the end then
// overlaps the device's write-back with its own copying, and the final
// sync finds little left to write: the copy finishes near the device's
// speed instead of taking the copy's time plus the write-back's.
//
// It changes when data reaches the device, never what a sync promises:
// nothing is reported durable earlier, and every ordering the formats
// build with Sync stays as it was. Starting write-back early only does
// what the kernel may do at any moment anyway.
//
// A WriteBehind is off until [WriteBehind.Set] turns it on: [Copy] turns
// it on for its destination, and a caller filling a disk otherwise (a
// restore) through [WriteBehinder]. Its methods are safe
// for concurrent use; a nil *WriteBehind is always off.
type WriteBehind struct {
	on atomic.Bool
	// Window is the number of bytes written to one file between two
	// starts of its write-back; 0 means DefaultWriteBehindWindow. Set it
	// before the first write.
	Window int64
}

// Set turns write-behind on or off and returns whether it was on.
func (w *WriteBehind) Set(on bool) bool {
	if w == nil {
		return false
	}
	return w.on.Swap(on)
}

// On reports whether write-behind is on.
func (w *WriteBehind) On() bool { return w != nil && w.on.Load() }

func (w *WriteBehind) window() int64 {
	if w.Window > 0 {
		return w.Window
	}
	return DefaultWriteBehindWindow
}

// File wraps f so that, while w is on, every Window bytes written through
// it start the write-back of f's dirty pages (see [StartWriteBack]). The
// wrapper has an Fd method exactly when f has one, so hole punching,
// SEEK_DATA and image locks work through it as through f. A nil w returns
// f itself.
func (w *WriteBehind) File(f File) File {
	if w == nil {
		return f
	}
	b := &behindFile{File: f, w: w}
	if x, ok := f.(fder); ok {
		return behindFdFile{behindFile: b, fd: x}
	}
	return b
}

// behindFile is a File written through a WriteBehind.
type behindFile struct {
	File
	w       *WriteBehind
	pending atomic.Int64 // bytes written since write-back was last started
	busy    atomic.Bool  // a start is in progress: other writers go on
}

// WriteAt writes through the file and starts its write-back every window.
func (f *behindFile) WriteAt(p []byte, off int64) (int, error) {
	n, err := f.File.WriteAt(p, off)
	if n <= 0 || !f.w.on.Load() {
		return n, err
	}
	if seen := f.pending.Add(int64(n)); seen >= f.w.window() && f.busy.CompareAndSwap(false, true) {
		f.pending.Add(-seen) // what others add meanwhile counts toward the next start
		// A failure to start write-back is not a write error: the
		// final Sync writes the same pages and reports what fails.
		StartWriteBack(f.File)
		f.busy.Store(false)
	}
	return n, err
}

// Unwrap returns the wrapped file.
func (f *behindFile) Unwrap() File { return f.File }

// behindFdFile is a behindFile over a file with a descriptor.
type behindFdFile struct {
	*behindFile
	fd fder
}

// Fd returns the wrapped file's descriptor.
func (f behindFdFile) Fd() uintptr { return f.fd.Fd() }

// WriteBackStarter is a File that decides itself how to start the
// write-back of its dirty pages: a file that is never synced (qemu-img's
// cache=unsafe) starts none, and a test file may count the calls.
type WriteBackStarter interface {
	StartWriteBack() error
}

// StartWriteBack asks the kernel to start writing f's dirty pages to the
// device without waiting for them (sync_file_range with
// SYNC_FILE_RANGE_WRITE on Linux). It makes nothing durable: only Sync
// does. A file implementing WriteBackStarter decides itself; files
// without a descriptor, and systems without the call, do nothing.
func StartWriteBack(f File) error {
	if s, ok := f.(WriteBackStarter); ok {
		return s.StartWriteBack()
	}
	if x, ok := f.(fder); ok {
		return startWriteBack(x.Fd())
	}
	return nil
}

// WriteBehinder is a Disk whose files can be written behind (see
// [WriteBehind]). SetWriteBehind turns it on or off and returns whether it
// was on. [Copy] turns it on for its destination while it copies.
type WriteBehinder interface {
	SetWriteBehind(on bool) bool
}
