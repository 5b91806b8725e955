package ext4

import (
	"errors"
	"io"
	"io/fs"
	"testing"

	"github.com/vdisk-project/vdisk/disk"
)

// fuzzSize is the volume size a fuzz input stands for: inputs are images
// with their trailing zeros cut off, so that the seeds stay small.
const fuzzSize = 64 << 10

// padded reads data followed by zeros up to size.
type padded struct {
	data []byte
	size int64
}

func (p *padded) ReadAt(b []byte, off int64) (int, error) {
	if off >= p.size {
		return 0, io.EOF
	}
	n := 0
	if off < int64(len(p.data)) {
		n = copy(b, p.data[off:])
	}
	m := min(int64(len(b)), p.size-off)
	clear(b[n:m])
	if m < int64(len(b)) {
		return int(m), io.EOF
	}
	return int(m), nil
}

// FuzzOpen opens an image and walks all of it: every call must return or
// fail with one of the reader's error codes, never panic, and finish
// quickly. The seeds (testdata/fuzz/FuzzOpen) are small mkfs images.
func FuzzOpen(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		size := max(int64(len(data)), fuzzSize)
		fsys, err := Open(&padded{data, size}, size)
		if err != nil {
			checkErr(t, "Open", err)
			return
		}
		exercise(t, fsys)
	})
}

// checkErr fails unless err is one of the reader's typed errors.
func checkErr(t *testing.T, what string, err error) {
	t.Helper()
	switch {
	case err == nil, err == io.EOF,
		errors.Is(err, disk.ErrCorrupt), errors.Is(err, disk.ErrNotSupported),
		errors.Is(err, fs.ErrNotExist), errors.Is(err, disk.ErrInvalid), errors.Is(err, fs.ErrInvalid):
	default:
		t.Fatalf("%s: untyped error %v", what, err)
	}
}

// exercise visits every file of fsys (up to a budget), with every method.
func exercise(t *testing.T, fsys *FS) {
	fsys.Type()
	fsys.Label()
	fsys.UUID()
	fsys.Statfs()
	budget := 2000
	buf := make([]byte, 64<<10)
	fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			checkErr(t, "walk "+p, err)
			return nil
		}
		if budget--; budget < 0 {
			return fs.SkipAll
		}
		_, err = d.Info()
		checkErr(t, "Info "+p, err)
		_, err = fsys.Stat(p)
		checkErr(t, "Stat "+p, err)
		fi, err := fsys.Lstat(p)
		checkErr(t, "Lstat "+p, err)
		_, err = fsys.Xattrs(p)
		checkErr(t, "Xattrs "+p, err)
		if fi != nil && fi.Mode()&fs.ModeSymlink != 0 {
			_, err = fsys.ReadLink(p)
			checkErr(t, "ReadLink "+p, err)
		}
		f, err := fsys.Open(p)
		checkErr(t, "Open "+p, err)
		if f == nil {
			return nil
		}
		defer f.Close()
		if rd, ok := f.(fs.ReadDirFile); ok {
			for range 100 {
				ents, err := rd.ReadDir(50)
				if err == io.EOF {
					break
				}
				checkErr(t, "ReadDir "+p, err)
				if err != nil || len(ents) == 0 {
					break
				}
			}
			return nil
		}
		ra := f.(io.ReaderAt)
		st, _ := f.Stat()
		for _, off := range []int64{0, 1000, st.Size() - 100, st.Size() / 2} {
			if off >= 0 {
				_, err := ra.ReadAt(buf, off)
				checkErr(t, "ReadAt "+p, err)
			}
		}
		for range 4 {
			_, err := f.Read(buf[:1000])
			if err != nil {
				checkErr(t, "Read "+p, err)
				break
			}
		}
		return nil
	})
}

func walkCount(t *testing.T, fsys fs.FS) int {
	n := 0
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n++
		if d.Type().IsRegular() {
			if _, err := fs.ReadFile(fsys, p); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	return n
}
