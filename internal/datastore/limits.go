package datastore

import (
	"os"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format/vmdk"
)

// Bounds on what clients store in the datastore's records. With them a
// disk.json stays far below the size Open reads (maxStateFile): 256
// snapshots with the longest names and descriptions, 64 leases with the
// longest reasons and the direct leases come to under 2 MiB.
const (
	// MaxCapacity is the largest disk the datastore creates or grows to:
	// 62 TiB, vSphere's limit.
	MaxCapacity = 62 << 40
	// MaxSnapshots is the number of snapshots a disk keeps at most.
	MaxSnapshots = 256
	// MaxLeases is the number of access leases a disk holds at most.
	MaxLeases = 64
	// MaxNameLen bounds a snapshot's name, MaxDescriptionLen its
	// description and MaxReasonLen a lease's reason, in bytes.
	MaxNameLen        = 255
	MaxDescriptionLen = 4096
	MaxReasonLen      = 512
)

// checkText refuses a client-supplied string that is too long, not UTF-8,
// or holds control characters (newlines and tabs only where multiline is
// set).
func checkText(what, s string, max int, multiline bool) error {
	if len(s) > max {
		return disk.Errorf(disk.ErrInvalid, "datastore: %s of %d bytes is longer than the %d allowed", what, len(s), max)
	}
	if !utf8.ValidString(s) {
		return disk.Errorf(disk.ErrInvalid, "datastore: %s is not valid UTF-8", what)
	}
	if i := strings.IndexFunc(s, func(r rune) bool {
		return unicode.IsControl(r) && !(multiline && (r == '\n' || r == '\t'))
	}); i >= 0 {
		return disk.Errorf(disk.ErrInvalid, "datastore: %s holds a control character at byte %d", what, i)
	}
	return nil
}

func (spec SnapshotSpec) validate() error {
	if err := checkText("snapshot name", spec.Name, MaxNameLen, false); err != nil {
		return err
	}
	return checkText("snapshot description", spec.Description, MaxDescriptionLen, true)
}

// checkCapacity refuses a capacity no live disk may have.
func checkCapacity(n int64) error {
	if n <= 0 || n > MaxCapacity {
		return disk.Errorf(disk.ErrInvalid, "datastore: capacity %d bytes: a disk holds 1 byte to 62 TiB", n)
	}
	return nil
}

// sparseLimit is the capacity from which a monolithicSparse layer no
// longer works (32-bit sector numbers, §3.7): bases default to seSparse
// from there, and snapshot deltas are seSparse.
const sparseLimit = 2 << 40

// layerType is the subformat of new layers of a disk of capacity bytes:
// deltas, and bases whose type the caller left open.
func layerType(capacity int64) vmdk.Subformat {
	if capacity >= sparseLimit {
		return vmdk.SESparse
	}
	return vmdk.MonolithicSparse
}

var fileLimits sync.Map // directory -> int64

// fileLimit returns the largest file the filesystem holding dir can hold
// (ext4 with 4 KiB blocks: 16 TiB - 4 KiB), learnt once per directory by
// growing an empty probe file until the filesystem refuses (EFBIG or
// EINVAL): no block is allocated. 0 means unknown (no limit is applied).
func fileLimit(dir string) int64 {
	if v, ok := fileLimits.Load(dir); ok {
		return v.(int64)
	}
	f, err := os.CreateTemp(dir, ".vdisk-filelimit-")
	if err != nil {
		return 0
	}
	defer os.Remove(f.Name())
	defer f.Close()
	lo, hi := int64(0), int64(1)<<62/4096 // in 4 KiB units: lo fits, hi+1 does not
	if f.Truncate(hi*4096) == nil {
		lo = hi
	}
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		if f.Truncate(mid*4096) == nil {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	f.Truncate(0)
	limit := lo * 4096
	if lo == int64(1)<<62/4096 {
		limit = 0 // no limit worth applying
	}
	fileLimits.Store(dir, limit)
	return limit
}
