// Package backup is vdisk's backup engine: a repository of deduplicated,
// compressed and encrypted disk backups in a [storage.Storage] (a local
// directory, an S3-compatible store, memory).
//
// # Overview
//
// [Init] creates a repository and [Open] opens one. [Repository.Backup]
// stores the disks of a source (a VM, a host disk) as a new [Point]: a full
// chunk map per disk, so that every point is a synthetic full however it was
// taken. Incrementals read only what changed (SourceDisk.Changed: the host's
// changed block tracking or an NBD dirty bitmap) and take the rest from the
// parent point's map; a chunk that changed in part is completed from the
// parent's copy of it (BackupOptions.MergeBelow), so only the changed bytes
// are read. Hashing decides what is stored. Interrupted backups
// resume from a checkpoint.
//
// A point's disk opens as a read-only [disk.Disk] with [Repository.OpenDisk]
// (instant restore, export, file-level restore through package volume) and
// is written back with [Repository.Restore]. [Repository.Verify] checks the
// repository, reading some or all data; [Repository.RebuildIndex] repairs a
// lost or damaged index. [Repository.Forget] applies a retention policy and
// [Repository.Prune] reclaims the space of forgotten points.
//
// docs/backup.md describes the objects, their byte layouts and the
// write-order and prune arguments.
//
//	st := mem.New() // or local / s3
//	repo, err := backup.Init(ctx, st, backup.InitOptions{Password: pw})
//	p, sum, err := repo.Backup(ctx, backup.BackupOptions{
//		Source: "vm/web01",
//		Disks:  []backup.SourceDisk{{Name: "scsi0:0", Disk: d}},
//	})
//	// later: an incremental from the changed areas
//	p2, _, err := repo.Backup(ctx, backup.BackupOptions{
//		Source: "vm/web01", Parent: p,
//		Disks:  []backup.SourceDisk{{Name: "scsi0:0", Disk: d, Changed: areas, ChangeID: id}},
//	})
//	r, err := repo.OpenDisk(ctx, p2, "scsi0:0")
//
// # Concurrency
//
// A Repository is safe for concurrent use. Any number of Repository values,
// in one process or on many machines, may back up into one store at once
// without a lock: every writer writes its own uniquely named objects, and
// a point becomes visible only when its manifest is written, after
// everything it names is durable. Prune may run concurrently with backups
// as long as every backup finishes within the grace period
// (PruneOptions.Grace, 24 hours by default); run one prune at a time.
//
// # Memory
//
// Open loads the whole index: 48 bytes per stored chunk (10 million chunks,
// 40 TiB of distinct data at 4 MiB, take about 480 MiB). A backup holds 32
// bytes per chunk of each disk's map (16 MiB for a 2 TiB disk at 4 MiB
// chunks), three chunk-sized buffers per worker, the open pack and at most
// four packs being uploaded: with the defaults under 200 MiB whatever the
// disk size. An open point Disk caches 8 chunks.
//
// # Errors
//
// Errors carry package disk's codes: a wrong password is
// [disk.ErrPermission], a damaged object [disk.ErrCorrupt] (the message
// names it), a missing point, disk or object [disk.ErrNotFound], a bad
// argument [disk.ErrInvalid]; storage failures keep the storage's code
// (usually [disk.ErrAccess]). Writes to an opened point fail with
// disk.ErrPermission.
package backup
