package backup

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vdisk-project/vdisk/backup/storage"
	"github.com/vdisk-project/vdisk/backup/storage/mem"
	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/disk/disktest"
)

// dirStorage is a minimal directory Storage for benchmarks, until
// backup/storage/local is merged.
type dirStorage struct{ root string }

func (d dirStorage) path(name string) string { return filepath.Join(d.root, filepath.FromSlash(name)) }

// wrap gives os errors the codes the Storage contract promises.
func wrap(err error, name string) error { return disk.Wrap(err, "dir", name, -1) }

func (d dirStorage) Put(ctx context.Context, name string, data []byte) error {
	p := d.path(name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-*")
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), p)
}

func (d dirStorage) ReadAt(ctx context.Context, name string, p []byte, off int64) (int, error) {
	f, err := os.Open(d.path(name))
	if err != nil {
		return 0, wrap(err, name)
	}
	defer f.Close()
	n, err := f.ReadAt(p, off)
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (d dirStorage) Get(ctx context.Context, name string, max int64) ([]byte, error) {
	st, err := os.Stat(d.path(name))
	if err != nil {
		return nil, wrap(err, name)
	}
	if st.Size() > max {
		return nil, disk.Errorf(disk.ErrOutOfMemory, "too large")
	}
	return os.ReadFile(d.path(name))
}

func (d dirStorage) Stat(ctx context.Context, name string) (storage.Info, error) {
	st, err := os.Stat(d.path(name))
	if err != nil {
		return storage.Info{}, wrap(err, name)
	}
	return storage.Info{Name: name, Size: st.Size(), ModTime: st.ModTime()}, nil
}

func (d dirStorage) List(ctx context.Context, prefix string, fn func(storage.Info) error) error {
	return filepath.WalkDir(d.root, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || strings.HasPrefix(e.Name(), ".tmp-") {
			return err
		}
		name := filepath.ToSlash(strings.TrimPrefix(p, d.root+string(filepath.Separator)))
		if !strings.HasPrefix(name, prefix) {
			return nil
		}
		st, err := e.Info()
		if err != nil {
			return err
		}
		return fn(storage.Info{Name: name, Size: st.Size(), ModTime: st.ModTime()})
	})
}

func (d dirStorage) Delete(ctx context.Context, name string) error {
	err := os.Remove(d.path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

func (d dirStorage) Close() error { return nil }

// benchDisk is a 4 GiB disk holding 1 GiB of random data in 64 MiB runs.
func benchDisk(b *testing.B) *disktest.MemDisk {
	b.Helper()
	const size, data, run = 4 << 30, 1 << 30, 64 << 20
	d := disktest.NewMemDisk(size)
	rng := rand.NewChaCha8([32]byte{1})
	buf := make([]byte, run)
	for off := int64(0); off < data*4; off += 4 * run {
		_, _ = rng.Read(buf)
		if _, err := d.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
	}
	return d
}

func benchRepo(b *testing.B, kind string) *Repository {
	b.Helper()
	var st storage.Storage = mem.New()
	if kind == "dir" {
		st = dirStorage{root: b.TempDir()}
	}
	r, err := Init(context.Background(), st, InitOptions{Password: testPassword, ScryptN: 1024})
	if err != nil {
		b.Fatal(err)
	}
	return r
}

// BenchmarkBackup: a full backup of 1 GiB of random data in a 4 GiB disk.
func BenchmarkBackup(b *testing.B) {
	d := benchDisk(b)
	for _, kind := range []string{"mem", "dir"} {
		b.Run(kind, func(b *testing.B) {
			b.SetBytes(1 << 30)
			b.ReportAllocs()
			for range b.N {
				b.StopTimer()
				r := benchRepo(b, kind)
				b.StartTimer()
				if _, _, err := r.Backup(context.Background(), BackupOptions{Source: "b", Disks: []SourceDisk{{Name: "d", Disk: d}}}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				r.Close()
			}
		})
	}
}

// BenchmarkRestore restores that point into a new disk.
func BenchmarkRestore(b *testing.B) {
	d := benchDisk(b)
	for _, kind := range []string{"mem", "dir"} {
		b.Run(kind, func(b *testing.B) {
			r := benchRepo(b, kind)
			defer r.Close()
			p, _, err := r.Backup(context.Background(), BackupOptions{Source: "b", Disks: []SourceDisk{{Name: "d", Disk: d}}})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(1 << 30)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				tgt := disktest.NewMemDisk(d.Size())
				if _, err := r.Restore(context.Background(), p, "d", tgt, RestoreOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkIncremental: an incremental after 1% of the data changed.
func BenchmarkIncremental(b *testing.B) {
	d := benchDisk(b)
	r := benchRepo(b, "mem")
	defer r.Close()
	ctx := context.Background()
	p, _, err := r.Backup(ctx, BackupOptions{Source: "b", Disks: []SourceDisk{{Name: "d", Disk: d}}})
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	fill := rand.NewChaCha8([32]byte{2})
	buf := make([]byte, 4096)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		var changed []disk.Extent
		for range (1 << 30) / 100 / DefaultChunkSize { // 1% of the data's chunks
			off := rng.Int64N(d.Size()/4096) * 4096
			_, _ = fill.Read(buf)
			_, _ = d.WriteAt(buf, off)
			changed = append(changed, disk.Extent{Off: off, Len: 4096})
		}
		cd := &countingDisk{Disk: d}
		b.StartTimer()
		np, sum, err := r.Backup(ctx, BackupOptions{Source: "b", Parent: p, Disks: []SourceDisk{{Name: "d", Disk: cd, Changed: changed}}})
		if err != nil {
			b.Fatal(err)
		}
		p = np
		b.ReportMetric(float64(sum.BytesRead)/float64(1<<20), "MiB-read/op")
	}
}
