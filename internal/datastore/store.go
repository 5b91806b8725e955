package datastore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format/vmdk"
)

// formatVersion is the datastore layout version in datastore.json.
const formatVersion = 1

// maxStateFile bounds the JSON files read from the datastore.
const maxStateFile = 16 << 20

// Options configure a Store. The zero value is usable.
type Options struct {
	// Logger receives operational messages; nil discards them.
	Logger *slog.Logger
	// Targets are the directories (by name) that disks may be relocated
	// to, besides the datastore's own root (named "default").
	Targets map[string]string
	// LockedMergeMax is the largest leaf (bytes allocated) a
	// consolidation merges with writes paused; a larger leaf is first
	// frozen under a helper layer. Default 64 MiB.
	LockedMergeMax int64
	// CBTCheckpoint is how often, at most, a flush also checkpoints a
	// disk's change tracking state. Crash safety does not rest on it (the
	// tracker's intent map does); it bounds what the tracker over-reports
	// after a crash. Default 30 s.
	CBTCheckpoint time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Views is the number of snapshot chains kept open between queries
	// (allocated blocks, metadata), so that a query costs what it reads,
	// not the opening of a chain of large extents; ViewFiles bounds the
	// files they hold together. Each chain caches at most 56 MiB of grain
	// tables (24 MiB hosted sparse, 32 MiB SEsparse), usually far less.
	// Defaults DefaultViews and DefaultViewFiles; a negative Views keeps
	// none.
	Views, ViewFiles int

	// failReclaim, set by tests, stops the leak reclamation of a layer at
	// load, as a crash would, when it returns an error.
	failReclaim func(layer int) error
}

// Store is an open datastore. See the package doc.
type Store struct {
	root string
	o    Options
	log  *slog.Logger
	lock *os.File // ROOT/lock, locked for the Store's lifetime

	mu     sync.Mutex
	vms    map[string]*vmState
	disks  map[string]*Disk
	failed map[string]error // disks that could not be opened at Open
	closed bool
	views  *viewCache // open snapshot chains for queries

	// bg runs the consolidations Open resumes; Close stops and waits.
	bg     sync.WaitGroup
	bgStop context.CancelFunc

	// crashAfterMerge, set by tests, makes a merge stop as a crash would
	// once the data is merged and before the switch is committed.
	crashAfterMerge func() bool
	// failCommit, set by tests, makes a disk.json write fail when it
	// returns an error.
	failCommit func() error
}

var errCrash = errors.New("datastore: simulated crash")

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// CheckName validates a VM, disk or snapshot name: 1 to 64 characters from
// letters, digits, '.', '_' and '-', not starting with '.', '_' or '-'. Such
// a name cannot traverse directories.
func CheckName(kind, name string) error {
	if !nameRE.MatchString(name) || strings.Contains(name, "..") {
		return disk.Errorf(disk.ErrInvalid, "datastore: invalid %s name %q: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", kind, name)
	}
	return nil
}

var keyRE = regexp.MustCompile(`^(scsi[0-3]|ide[0-1]|sata[0-3]|nvme[0-3]):([0-9]|1[0-5]|[1-5][0-9]|6[0-4])$`)

// CheckKey validates a controller key such as "scsi0:0", "ide1:1",
// "sata0:3" or "nvme0:2".
func CheckKey(key string) error {
	if !keyRE.MatchString(key) {
		return disk.Errorf(disk.ErrInvalid, "datastore: invalid controller key %q (want scsiN:M, ideN:M, sataN:M or nvmeN:M)", key)
	}
	return nil
}

// Open opens (creating if needed) the datastore in directory root and
// finishes any operation a crash interrupted.
func Open(ctx context.Context, root string, o *Options) (*Store, error) {
	var opts Options
	if o != nil {
		opts = *o
	}
	if opts.CBTCheckpoint <= 0 {
		opts.CBTCheckpoint = 30 * time.Second
	}
	if opts.LockedMergeMax <= 0 {
		opts.LockedMergeMax = 64 << 20
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Views == 0 {
		opts.Views = DefaultViews
	}
	if opts.ViewFiles <= 0 {
		opts.ViewFiles = DefaultViewFiles
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, disk.Wrap(err, "datastore: open", root, -1)
	}
	for _, sub := range []string{"", "vms", "disks"} {
		if err := os.MkdirAll(filepath.Join(abs, sub), 0o700); err != nil {
			return nil, disk.Wrap(err, "datastore: create", filepath.Join(abs, sub), -1)
		}
	}
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		return nil, disk.Wrap(err, "datastore: open", root, -1)
	}
	for _, sub := range []string{"", "vms", "disks"} {
		if err := checkPrivate(filepath.Join(abs, sub)); err != nil {
			return nil, err
		}
	}
	lock, err := lockRoot(abs, opts.Now())
	if err != nil {
		return nil, err
	}
	unlock := true
	defer func() {
		if unlock {
			lock.Close()
		}
	}()
	for name, dir := range opts.Targets {
		if err := CheckName("target", name); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Join(dir, "disks"), 0o750); err != nil {
			return nil, disk.Wrap(err, "datastore: create target", dir, -1)
		}
		if d, err := filepath.EvalSymlinks(dir); err == nil {
			opts.Targets[name] = d
		}
	}
	marker := filepath.Join(abs, "datastore.json")
	if b, err := readSmall(marker); err == nil {
		var m struct{ Version int }
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, disk.Errorf(disk.ErrCorrupt, "datastore: %s: %v", marker, err)
		}
		if m.Version != formatVersion {
			return nil, disk.Errorf(disk.ErrNotSupported, "datastore: %s: layout version %d is not supported (want %d)", marker, m.Version, formatVersion)
		}
	} else if errors.Is(err, fs.ErrNotExist) {
		if err := disk.WriteFileAtomic(nil, marker, fmt.Appendf(nil, "{\"Version\": %d}\n", formatVersion), 0o600); err != nil {
			return nil, disk.Wrap(err, "datastore: create", marker, -1)
		}
	} else {
		return nil, err
	}
	s := &Store{root: abs, o: opts, log: log, lock: lock, vms: map[string]*vmState{}, disks: map[string]*Disk{}, failed: map[string]error{},
		views: newViewCache(opts.Views, opts.ViewFiles)}
	unlock = false // s.Close releases it
	bgCtx, stop := context.WithCancel(context.Background())
	s.bgStop = stop
	if err := s.load(ctx); err != nil {
		s.Close()
		return nil, err
	}
	// Finish consolidations a crash left undone (a snapshot removed but its
	// layer not yet merged), in the background: the disks are usable
	// meanwhile, and Close waits.
	for _, d := range s.disks {
		s.bg.Go(func() {
			d.ops.Lock()
			defer d.ops.Unlock()
			if err := d.consolidate(bgCtx); err != nil && bgCtx.Err() == nil {
				s.log.Warn("consolidation at open failed; the next snapshot removal retries it", "disk", d.name, "err", err)
			}
		})
	}
	return s, nil
}

// Root returns the datastore's directory.
func (s *Store) Root() string { return s.root }

func (s *Store) load(ctx context.Context) error {
	ents, err := os.ReadDir(filepath.Join(s.root, "disks"))
	if err != nil {
		return disk.Wrap(err, "datastore: list disks", s.root, -1)
	}
	for _, e := range ents {
		if CheckName("disk", e.Name()) != nil {
			continue
		}
		if e.Type()&fs.ModeSymlink != 0 {
			s.log.Warn("datastore: ignoring a symbolic link in disks/", "name", e.Name())
			continue
		}
		d, err := s.loadDisk(ctx, e.Name())
		if errors.Is(err, fs.ErrNotExist) {
			continue // a creation that never committed; removed by Cleanup
		}
		if err != nil {
			// One bad disk (a corrupt or oversized record, a full
			// filesystem) must not keep the others from being served:
			// it is set aside, reported by Disks and refused by name.
			s.log.Error("a disk could not be opened; it is left out until the host restarts", "disk", e.Name(), "err", err)
			s.failed[e.Name()] = err
			continue
		}
		s.disks[d.name] = d
	}
	disk.RemoveAtomicLeftovers(filepath.Join(s.root, "vms"))
	ents, err = os.ReadDir(filepath.Join(s.root, "vms"))
	if err != nil {
		return disk.Wrap(err, "datastore: list VMs", s.root, -1)
	}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || CheckName("VM", name) != nil {
			continue
		}
		v, err := s.loadVM(name)
		if err != nil {
			s.log.Error("a VM could not be opened; it is left out until the host restarts", "vm", name, "err", err)
			s.failed["vm:"+name] = err
			continue
		}
		s.vms[name] = v
	}
	return nil
}

// Close closes every disk cleanly (their trackers are then trusted at the
// next Open).
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	if s.bgStop != nil {
		s.bgStop()
	}
	s.bg.Wait()
	s.mu.Lock()
	disks := make([]*Disk, 0, len(s.disks))
	for _, d := range s.disks {
		disks = append(disks, d)
	}
	s.mu.Unlock()
	var errs []error
	for _, d := range disks {
		errs = append(errs, d.close())
	}
	if s.lock != nil {
		errs = append(errs, s.lock.Close()) // releases the data directory
	}
	return errors.Join(errs...)
}

// dropLock releases the data directory as the death of the process would,
// leaving everything else open: tests that simulate a crash open a second
// Store on the same directory afterwards.
func (s *Store) dropLock() {
	s.lock.Close()
	s.lock = nil
}

// checkPrivate refuses a data directory that group or others can write:
// they could plant state files, links and images the host would trust.
func checkPrivate(dir string) error {
	st, err := os.Lstat(dir)
	if err != nil {
		return disk.Wrap(err, "datastore: stat", dir, -1)
	}
	if !st.IsDir() {
		return disk.Errorf(disk.ErrPermission, "datastore: %s is not a directory", dir)
	}
	if m := st.Mode().Perm(); m&0o022 != 0 {
		return disk.Errorf(disk.ErrPermission, "datastore: %s is writable by group or others (mode %#o); refusing to use it: chmod go-w it", dir, m)
	}
	return nil
}

// lockHolder is what ROOT/lock says about the host that holds it.
type lockHolder struct {
	PID   int       `json:"pid"`
	Host  string    `json:"host"`
	Since time.Time `json:"since"`
}

// maxLockFile bounds the holder record read from ROOT/lock.
const maxLockFile = 4 << 10

// lockRoot takes the exclusive lock on ROOT/lock that makes a host the only
// one serving the data directory, and records the holder in the file. A
// data directory in use gives disk.ErrBusy naming the holder. Closing the
// returned file releases the lock.
func lockRoot(root string, now time.Time) (*os.File, error) {
	name := filepath.Join(root, "lock")
	f, err := disk.OpenFileNoFollow(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, disk.Wrap(err, "datastore: open", name, -1)
	}
	if err := disk.LockExclusive(f); err != nil {
		f.Close()
		if disk.CodeOf(err) != disk.ErrBusy {
			return nil, disk.Wrap(err, "datastore: lock", name, -1)
		}
		var h lockHolder
		if b, rerr := disk.ReadFileNoFollow(name, maxLockFile); rerr == nil && json.Unmarshal(b, &h) == nil && h.PID > 0 {
			return nil, disk.Errorf(disk.ErrBusy, "datastore: data directory %s is in use by pid %d on %s since %s",
				root, h.PID, h.Host, h.Since.UTC().Format(time.RFC3339))
		}
		return nil, disk.Errorf(disk.ErrBusy, "datastore: data directory %s is in use by another process", root)
	}
	host, _ := os.Hostname()
	b, _ := json.Marshal(lockHolder{PID: os.Getpid(), Host: host, Since: now.UTC().Truncate(time.Second)})
	b = append(b, '\n')
	err = f.Truncate(0)
	if err == nil {
		_, err = f.WriteAt(b, 0)
	}
	if err != nil {
		f.Close()
		return nil, disk.Wrap(err, "datastore: write", name, -1)
	}
	return f, nil
}

// readSmall reads a state file, refusing symbolic links (without following
// them, so no check-then-open race), other non-regular files and huge files.
func readSmall(path string) ([]byte, error) {
	b, err := disk.ReadFileNoFollow(path, maxStateFile)
	if err != nil {
		return nil, disk.Wrap(err, "datastore: read", path, -1)
	}
	return b, nil
}

// writeJSON stores v at path atomically and durably.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return disk.Wrap(disk.WriteFileAtomic(nil, path, append(b, '\n'), 0o600), "datastore: write", path, -1)
}

// checkDir refuses a directory that is a symbolic link or not a directory.
func checkDir(path string) error {
	st, err := os.Lstat(path)
	if err != nil {
		return disk.Wrap(err, "datastore: stat", path, -1)
	}
	if st.Mode()&fs.ModeSymlink != 0 || !st.IsDir() {
		return disk.Errorf(disk.ErrPermission, "datastore: %s is not a plain directory", path)
	}
	return nil
}

// targetDir returns the directory a relocation target name stands for.
func (s *Store) targetDir(name string) (string, error) {
	if name == "" || name == "default" {
		return s.root, nil
	}
	if dir, ok := s.o.Targets[name]; ok {
		return dir, nil
	}
	return "", disk.Errorf(disk.ErrNotFound, "datastore: unknown datastore %q", name)
}

// Targets lists the datastore names disks may live in, "default" first.
func (s *Store) Targets() []string {
	names := []string{"default"}
	for n := range s.o.Targets {
		names = append(names, n)
	}
	slices.Sort(names[1:])
	return names
}

// DiskSpec describes a new disk.
type DiskSpec struct {
	Name     string
	Capacity int64
	// Type is the base layer's subformat; default monolithicSparse below
	// 2 TiB and seSparse from there (split into extents that fit the
	// filesystem's file size limit). Snapshot deltas are monolithicSparse
	// below 2 TiB and seSparse from there.
	Type    vmdk.Subformat
	Adapter string // default lsilogic
	CBT     bool   // start with change tracking enabled
	// CBTBlockSize is the change tracking granularity in bytes, a power of
	// two from 512 bytes to 64 MiB. Smaller blocks make incrementals of
	// small scattered writes read less, at the cost of tracker memory (see
	// internal/cbt). 0 picks DefaultCBTBlockSize(Capacity).
	CBTBlockSize int64
}

// DefaultCBTBlockSize is the tracking granularity for a disk of capacity
// bytes: 4 KiB (the guest's page and file system block, so an incremental
// of small scattered writes reads what changed and no more) up to
// 256 GiB, growing with the capacity so that a fully changed epoch costs at
// most 8 MiB of bitmap, and at most 64 KiB.
func DefaultCBTBlockSize(capacity int64) int64 {
	b := int64(4 << 10)
	for b < 64<<10 && capacity/b > 64<<20 {
		b *= 2
	}
	return b
}

// CreateDisk makes a detached disk.
func (s *Store) CreateDisk(ctx context.Context, spec DiskSpec) (DiskInfo, error) {
	if err := CheckName("disk", spec.Name); err != nil {
		return DiskInfo{}, err
	}
	if err := checkCapacity(spec.Capacity); err != nil {
		return DiskInfo{}, err
	}
	switch spec.Type {
	case "":
		spec.Type = layerType(spec.Capacity)
	case vmdk.MonolithicSparse, vmdk.MonolithicFlat, vmdk.TwoGbMaxExtentSparse, vmdk.TwoGbMaxExtentFlat, vmdk.VMFS, vmdk.VMFSThin, vmdk.SESparse:
	default:
		return DiskInfo{}, disk.Errorf(disk.ErrNotSupported, "datastore: a live disk cannot be of type %s (use monolithicSparse, monolithicFlat, twoGbMaxExtentSparse, twoGbMaxExtentFlat, vmfs, vmfsThin or seSparse)", spec.Type)
	}
	if spec.Adapter == "" {
		spec.Adapter = "lsilogic"
	}
	if spec.CBTBlockSize == 0 {
		spec.CBTBlockSize = DefaultCBTBlockSize(spec.Capacity)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return DiskInfo{}, disk.Errorf(disk.ErrInvalid, "datastore: closed")
	}
	if _, ok := s.disks[spec.Name]; ok {
		s.mu.Unlock()
		return DiskInfo{}, disk.Errorf(disk.ErrInvalid, "datastore: disk %s exists", spec.Name)
	}
	// Reserve the name while the files are made.
	s.disks[spec.Name] = nil
	s.mu.Unlock()
	d, err := s.createDisk(ctx, spec)
	s.mu.Lock()
	if err != nil {
		delete(s.disks, spec.Name)
	} else {
		s.disks[spec.Name] = d
	}
	s.mu.Unlock()
	if err != nil {
		return DiskInfo{}, err
	}
	s.log.Info("disk created", "disk", spec.Name, "capacity", spec.Capacity, "type", spec.Type)
	return d.Info(), nil
}

// disk returns the named disk.
func (s *Store) disk(name string) (*Disk, error) {
	if err := CheckName("disk", name); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.disks[name]
	if d == nil {
		if err := s.failed[name]; err != nil {
			return nil, s.failedErr(name, err)
		}
		return nil, disk.Errorf(disk.ErrNotFound, "datastore: no disk %s", name)
	}
	return d, nil
}

// failedErr is the error for a disk that could not be opened.
func (s *Store) failedErr(name string, err error) error {
	code := disk.CodeOf(err)
	if code == disk.ErrNotFound || code == disk.ErrInvalid {
		code = disk.ErrCorrupt
	}
	return &disk.Error{Op: "datastore: disk " + name + " failed to open at startup", Off: -1, Code: code, Err: err}
}

// Disk returns the named disk.
func (s *Store) Disk(name string) (*Disk, error) { return s.disk(name) }

// Disks lists every disk, by name.
func (s *Store) Disks() []DiskInfo {
	s.mu.Lock()
	ds := make([]*Disk, 0, len(s.disks))
	for _, d := range s.disks {
		if d != nil {
			ds = append(ds, d)
		}
	}
	out := make([]DiskInfo, 0, len(ds)+len(s.failed))
	for name, err := range s.failed {
		if !strings.HasPrefix(name, "vm:") {
			out = append(out, DiskInfo{Name: name, Failed: err.Error(), Snapshots: []SnapshotInfo{}})
		}
	}
	s.mu.Unlock()
	for _, d := range ds {
		out = append(out, d.Info())
	}
	slices.SortFunc(out, func(a, b DiskInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// DeleteDisk removes a detached disk and its files. A disk attached to a
// VM, in use, or held by an access lease is refused with ErrBusy.
func (s *Store) DeleteDisk(ctx context.Context, name string) error {
	d, err := s.disk(name)
	if err != nil {
		return err
	}
	if vm := d.owner(); vm != "" {
		return disk.Errorf(disk.ErrBusy, "datastore: disk %s is attached to VM %s; detach it first", name, vm)
	}
	s.mu.Lock()
	if s.disks[name] != d {
		s.mu.Unlock()
		return disk.Errorf(disk.ErrNotFound, "datastore: no disk %s", name)
	}
	if err := d.retire(); err != nil {
		s.mu.Unlock()
		return err
	}
	delete(s.disks, name)
	s.mu.Unlock()
	s.log.Info("disk deleted", "disk", name)
	return d.removeFiles()
}
