// Package lvm reads LVM2 volume groups from their physical volumes, read
// only, without device-mapper: it finds each PV's label, reads the text
// metadata from the PVs' metadata areas, picks the newest good copy, and
// maps each logical volume's bytes onto the PVs.
//
// # Format
//
// A PV has a label in one of its first four sectors ([ReadLabel]) naming
// its UUID, its data area and its metadata areas. Each metadata area has
// a header and a circular buffer holding the committed metadata text
// ([ReadMetadata]); both carry LVM's CRC-32 (initial value 0xf597a6cf,
// no final inversion). The text is in LVM's configuration syntax
// ([Parse]) and describes the VG ([ParseVG]): its extent size, its PVs
// (by UUID, with pe_start and pe_count) and its LVs, each a list of
// segments mapping runs of logical extents onto PV extents, linearly or
// striped.
//
// # Choosing the metadata
//
// Every PV of a VG usually holds the same metadata; after an update
// interrupted, or a PV missing during one, copies differ. [Scan] takes
// the copy with the highest seqno whose checksums hold and that parses,
// and names each copy it ignored (damaged, or older) in VG.Problems.
//
// # What can be read
//
// Linear and striped LVs (and "zero" segments) are mapped by [VG.Open].
// Thin pools and thin LVs, RAID and mirror LVs, snapshots' copy-on-write
// stores, cache, VDO and integrity LVs, and LVs with a segment on a PV
// that is not present are reported by [VG.Unsupported] with the reason,
// and Open refuses them with disk.ErrNotSupported.
//
// # Hostile input
//
// Labels, area headers and texts are checked before use: areas must lie
// on the device, texts are at most [MaxTextSize] bytes, sections nest at
// most 16 deep and a text holds at most a million items, extent counts
// and offsets are bounded so byte offsets cannot overflow. Damage gives
// errors matching disk.ErrCorrupt, never a panic.
package lvm
