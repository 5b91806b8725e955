package datastore

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/vdisk-project/vdisk/disk"
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
