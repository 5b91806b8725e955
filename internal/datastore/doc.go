// Package datastore keeps the host's virtual machines and disks in a
// directory: their VMDK chains, snapshots, change tracking and the locks
// that backup and relocation take.
//
// # Layout
//
//	ROOT/datastore.json          marker and format version
//	ROOT/vms/NAME.json           a VM: its disks by controller key, its snapshots, access leases
//	ROOT/disks/NAME/disk.json    a disk: layers, snapshots, change tracking, pending operation
//	ROOT/disks/NAME/cbt.state    the change tracker (internal/cbt)
//	ROOT/disks/NAME/writing.json the SEsparse layers open for writing (writing.go)
//	DIR/disks/NAME/NAME-000007.vmdk   layer 7 of the disk (DIR is ROOT or a relocation target)
//
// Every name is checked ([CheckName]) and every path is built from checked
// names under a root, so no request reaches outside the datastore; the
// directories and files a disk uses are refused if they are symbolic links.
//
// # Layers and snapshots
//
// A disk is a tree of layers: a base (any type vdisk creates) and sparse
// deltas, each naming its parent. The live layer (the leaf) is the only one
// written. A snapshot pins the leaf of the moment and starts a new leaf on
// top of it, so the pinned chain stays readable and frozen while writes go
// on. Removing a snapshot unpins its layer; consolidation then merges every
// unpinned layer that has a single child into that child's place: the
// child's data is written into the parent (which nothing else reads
// without the child on top, so no reader ever sees a change), then the
// child's role (its pins, its children, being the leaf) moves to the parent
// and the child's files go. A large leaf is first frozen under a helper
// layer so that writes keep flowing while it merges; only the last, small
// remainder is merged with writes paused. The operation is recorded in
// disk.json before it starts and redone at the next open after a crash, so
// it is idempotent and loses nothing.
//
// # Change tracking
//
// Every write, zeroing and trim through a disk's live handle is recorded in
// its tracker before it reaches the layer, so no write is missed, including
// those made during a consolidation (the VDDK 6.0 consolidation bug).
// Zeroings and trims of whole blocks are recorded as such. A snapshot
// records the change ID at its creation; [Disk.Changes] answers the areas
// changed between a change ID and a snapshot from the tracker alone, those
// that now read as zeros flagged Zero so that an incremental does not read
// them (the VDDK 6.7 unmap issue), in time proportional to the changes.
// The tracker's state is durable before the change ID a snapshot records
// is committed, and a write into a region of the disk not named by the
// tracker's intent map waits for the map that names it: after an unclean
// stop (SIGKILL, power loss) every change ID stays valid and its answer
// complete (see internal/cbt). Only when that cannot be proved does the
// tracker rotate its UUID, and the client takes a full backup.
//
// # Queries
//
// [Disk.Changes] answers from the tracker without opening the chain.
// [Disk.Allocated] (and Changes from "*") walk the snapshot's chain, which
// the Store keeps open between queries (Options.Views): a cached chain is
// used only while its snapshot's record and path of layers are those it
// was opened for, and every commit of a disk's state drops the ones it
// makes stale (views.go). A snapshot of an SEsparse leaf opens its view as
// it is taken, from the tables the live chain holds.
//
// # SEsparse after an unclean stop
//
// The SEsparse layers open for writing are named in
// ROOT/disks/NAME/writing.json before the first write reaches them; a
// disk that loads with layers named there has their leaked grains
// reclaimed before it is served (writing.go).
//
// # Faults
//
// A disk or VM whose record cannot be loaded at Open (corrupt, oversized,
// or on a full filesystem that state must be rewritten on) is set aside:
// [Store.Disks] reports it with Failed set, calls that name it fail with
// the reason, and every other disk is served. Client-supplied strings
// (names, descriptions, reasons, metadata) are bounded and free of control
// characters; snapshots and leases per disk are bounded, so a disk.json
// always loads.
//
// # Concurrency
//
// A Store and its disks are safe for concurrent use. Each disk has a gate:
// I/O holds it shared, and the short steps that switch layers (snapshot,
// the end of a merge, revert, grow, relocation) hold it exclusively.
package datastore
