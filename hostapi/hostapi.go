// Package hostapi holds the wire types of the vdisk host's control API
// (HTTPS + JSON under /api/v1): what the server answers, what its client
// and the kit decode. They are plain structs with JSON tags, shared by the
// server, internal/hostclient and the root vdisk package so that the three
// cannot drift apart, and public so that their fields show in go doc.
// api/openapi.yaml documents the same shapes. The package imports nothing
// of vdisk: a program that decodes the API links no storage engine.
package hostapi

import "time"

// Geometry is a disk's cylinders, heads and sectors per track.
type Geometry struct {
	Cylinders uint64
	Heads     uint32
	Sectors   uint32
}

// Session describes a login session (GET /api/v1/session). Privileges is
// the role's privilege bits: 1 read, 2 write, 4 snapshot, 8 manage access,
// 16 admin.
type Session struct {
	// ID identifies the session in logs and for revocation; it is not a
	// credential (the token is).
	ID         string
	User       string
	Role       string
	Privileges uint32
	Created    time.Time
	// Expires is when the session ends unless used again.
	Expires time.Time
}

// Area is a range of a disk in a changed-area or allocated-block answer.
type Area struct {
	Start  int64 `json:"start"`
	Length int64 `json:"length"`
	// Zero marks a changed range that now reads as zeros (trimmed, unmapped
	// or zeroed): record zeros without reading it.
	Zero bool `json:"zero,omitempty"`
}

// ChangeInfo answers a changed-area query (VMware's DiskChangeInfo): the
// areas within [StartOffset, StartOffset+Length) that changed. When Length
// stops short of the capacity the answer was cut at MaxAreas; ask again
// from StartOffset+Length.
type ChangeInfo struct {
	StartOffset int64  `json:"startOffset"`
	Length      int64  `json:"length"`
	Capacity    int64  `json:"capacity"`
	ChangeID    string `json:"changeId"` // the ID of the snapshot (or of now)
	Areas       []Area `json:"areas"`
}

// DirectLease lets a client that reaches the datastore's storage itself
// (same machine or a shared filesystem) open a disk's files directly, the
// HotAdd/SAN idea: the host keeps the locks. A read lease names a
// snapshot's frozen chain, which stays in place (no consolidation touches
// the disk) until the lease ends. A write lease (a restore) takes the live
// disk away from the host: no NBD session may open it until the lease
// ends, and then every block counts as changed for change tracking, since
// the host did not see the writes.
type DirectLease struct {
	ID       string    `json:"id"`
	Holder   string    `json:"holder"`
	Snapshot string    `json:"snapshot,omitempty"`
	Write    bool      `json:"write,omitempty"`
	Path     string    `json:"path"`     // the top link to open; parents follow by their hints
	Capacity int64     `json:"capacity"` // bytes
	Proof    string    `json:"proof"`    // file whose content must equal Nonce
	Nonce    string    `json:"nonce"`
	Created  time.Time `json:"created"`
}

// DiskInfo describes a disk.
type DiskInfo struct {
	Name      string `json:"name"`
	VM        string `json:"vm,omitempty"`
	Key       string `json:"key,omitempty"`
	Datastore string `json:"datastore"`
	// DatastorePath names the disk's file the way vSphere does,
	// "[datastore1] VMNAME/DISK.vmdk" (a detached disk: "[datastore1]
	// DISK/DISK.vmdk"); VixDiskLib_Open takes it. The host derives it.
	DatastorePath string    `json:"datastorePath,omitempty"`
	Capacity      int64     `json:"capacity"`
	Type          string    `json:"type"` // the VMDK create type of the base, e.g. monolithicSparse
	Adapter       string    `json:"adapter"`
	Created       time.Time `json:"created"`
	CBT           bool      `json:"cbt"`
	// CBTBlockSize is the change tracking granularity (0: the default).
	CBTBlockSize int64 `json:"cbtBlockSize,omitempty"`
	// ChangeID is the current change ID when CBT is on.
	ChangeID string `json:"changeId,omitempty"`
	// Failed, when set, says why the disk could not be opened when the
	// host started; the disk is not served and the other fields are empty.
	Failed    string         `json:"failed,omitempty"`
	Layers    int            `json:"layers"`
	Links     int            `json:"links"` // links in the live chain
	FileBytes int64          `json:"fileBytes"`
	Snapshots []SnapshotInfo `json:"snapshots"`
	Sessions  int            `json:"sessions"`
	Leases    []Lease        `json:"leases,omitempty"`
	Direct    []DirectLease  `json:"direct,omitempty"`
	// From the live chain: geometry, ddb.uuid and the leaf's parent hint.
	Geometry   Geometry `json:"geometry"`
	UUID       string   `json:"uuid,omitempty"`
	ParentHint string   `json:"parentHint,omitempty"`
}

// SnapshotInfo describes a snapshot.
type SnapshotInfo struct {
	ID          string    `json:"id"`
	Name        string    `json:"name,omitempty"`
	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created"`
	Capacity    int64     `json:"capacity"`
	ChangeID    string    `json:"changeId,omitempty"`
	Temporary   bool      `json:"temporary,omitempty"`
	Owner       string    `json:"owner,omitempty"`
}

// VMInfo describes a VM.
type VMInfo struct {
	Name string `json:"name"`
	// MoRef is the VM's managed-object ID, "vm-N", stable for the VM's
	// name: ConnectParams' vmxSpec "moref=vm-N" finds the VM by it.
	MoRef     string         `json:"moref,omitempty"`
	Created   time.Time      `json:"created"`
	Disks     []DiskInfo     `json:"disks"`
	Snapshots []SnapshotInfo `json:"snapshots"`
}

// Lease is a PrepareForAccess hold: while a disk has one, relocating or
// deleting it is refused.
type Lease struct {
	ID      string    `json:"id"`
	Holder  string    `json:"holder"` // the session that took it
	User    string    `json:"user,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	Created time.Time `json:"created"`
}

// CleanupReport says what Cleanup removed.
type CleanupReport struct {
	Snapshots []string `json:"snapshots"` // "disk@snapshot" or "vm@snapshot"
	Leases    []string `json:"leases"`
	Stray     []string `json:"stray"` // directories of disks whose creation never finished
}

// About is GET /api/v1/about.
type About struct {
	Version    string   `json:"version"`
	Thumbprint string   `json:"thumbprint"`
	NBD        []string `json:"nbd"`
	PlainNBD   []string `json:"plainNbd"`
	Datastores []string `json:"datastores"`
}

// TicketRequest is the body of POST /api/v1/tickets.
type TicketRequest struct {
	Disk     string `json:"disk,omitempty"`
	VM       string `json:"vm,omitempty"`
	Key      string `json:"key,omitempty"`
	Snapshot string `json:"snapshot,omitempty"`
	Mode     string `json:"mode"`
	TTL      int64  `json:"ttl,omitempty"`
	MaxConns int    `json:"maxConns,omitempty"`
}

// Ticket answers POST /api/v1/tickets.
type Ticket struct {
	Ticket     string    `json:"ticket"`
	ID         string    `json:"id"`
	Target     string    `json:"target"`
	Mode       string    `json:"mode"`
	Expires    time.Time `json:"expires"`
	Size       int64     `json:"size"`
	URI        string    `json:"uri"`
	PlainURI   string    `json:"plainUri,omitempty"`
	Thumbprint string    `json:"thumbprint"`
}

// DiskRequest is the body that creates a disk.
type DiskRequest struct {
	Key          string `json:"key,omitempty"`
	Name         string `json:"name,omitempty"`
	Capacity     int64  `json:"capacity"`
	Type         string `json:"type,omitempty"`
	Adapter      string `json:"adapter,omitempty"`
	CBT          bool   `json:"cbt,omitempty"`
	CBTBlockSize int64  `json:"cbtBlockSize,omitempty"`
}
