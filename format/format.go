// Package format opens and creates disk images of every format vdisk
// knows, choosing the format by probing magic bytes. The registry is
// explicit: raw and vmdk, in the table below; no init() magic.
package format

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"os"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format/raw"
	"github.com/vdisk-project/vdisk/format/vmdk"
)

// Format names an image format.
type Format string

// The formats vdisk reads and writes.
const (
	Raw  Format = "raw"
	VMDK Format = "vmdk"
)

// Formats lists the known formats.
var Formats = []Format{Raw, VMDK}

// OpenOptions modify Open. A nil *OpenOptions opens read-write with
// probing.
type OpenOptions struct {
	Format     Format // "" probes
	ReadOnly   bool
	SingleLink bool // vmdk: open one link of a chain
	IgnoreCID  bool // vmdk: accept a parent whose CID changed
	Unbuffered bool
	Salvage    bool // vmdk: serve what a damaged image still holds (read-only)
	// ForceShare skips image locking (qemu-img's -U); see
	// raw.Options.ForceShare.
	ForceShare bool
	FS         disk.FS
}

// CreateOptions modify Create; VMDK holds the vmdk-specific options.
type CreateOptions struct {
	VMDK vmdk.CreateOptions
	FS   disk.FS
}

// Detect reports the format of the image whose first bytes are head
// (at least 512 bytes, or the whole file when shorter): VMDK for a sparse
// extent (KDMV), a COWD delta, or a text descriptor (qemu's rule: comment
// lines, then "version=N"); raw for anything else.
func Detect(head []byte) Format {
	if len(head) >= 4 {
		switch binary.LittleEndian.Uint32(head) {
		case 0x564D444B, 0x44574F43: // KDMV, COWD
			return VMDK
		}
	}
	if isDescriptor(head) {
		return VMDK
	}
	return Raw
}

// isDescriptor applies qemu's probe for a text descriptor: any number of
// comment lines ("#...") and lines of only spaces, then a line that is
// exactly "version=1", "version=2" or "version=3" ended by "\n" or "\r\n".
// An empty line, a tab or anything else before it means "not a descriptor".
func isDescriptor(b []byte) bool {
	for len(b) > 0 {
		line, rest, found := bytes.Cut(b, []byte("\n"))
		switch {
		case len(line) > 0 && line[0] == '#':
		case len(line) > 0 && line[0] == ' ':
			if len(bytes.TrimSuffix(bytes.TrimLeft(line, " "), []byte("\r"))) != 0 || !found {
				return false
			}
		default:
			v := bytes.TrimSuffix(line, []byte("\r"))
			return found && len(v) == 9 && string(v[:8]) == "version=" && v[8] >= '1' && v[8] <= '3'
		}
		b = rest
	}
	return false
}

// Foreign names the image format of another tool that head (the first
// bytes of a file, at least 512 when the file has them) and tail (its last
// 512 bytes, for a fixed VHD's footer) show, or returns "" when they show
// none: qcow2, QED, VDI, VHD ("vpc", qemu's name), VHDX and LUKS. vdisk
// reads none of them; probing refuses them rather than treating their
// containers as raw disks.
func Foreign(head, tail []byte) string {
	switch {
	case bytes.HasPrefix(head, []byte("QFI\xfb")):
		return "qcow2"
	case bytes.HasPrefix(head, []byte("QED\x00")):
		return "qed"
	case bytes.HasPrefix(head, []byte("vhdxfile")):
		return "vhdx"
	case bytes.HasPrefix(head, []byte("conectix")):
		return "vpc"
	case bytes.HasPrefix(head, []byte("LUKS\xba\xbe")):
		return "luks"
	case len(head) >= 0x44 && binary.LittleEndian.Uint32(head[0x40:]) == 0xbeda107f:
		return "vdi"
	case bytes.HasPrefix(tail, []byte("conectix")):
		return "vpc" // a fixed VHD: raw data, then the footer
	}
	return ""
}

func (o *OpenOptions) fs() disk.FS {
	if o == nil || o.FS == nil {
		return disk.OSFS{}
	}
	return o.FS
}

// DetectFile probes the format of the file at path. The image of a format
// vdisk does not read (see [Foreign]) is disk.ErrNotSupported, naming it.
func DetectFile(fsys disk.FS, path string) (Format, error) {
	if fsys == nil {
		fsys = disk.OSFS{}
	}
	f, err := fsys.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return "", disk.Wrap(err, "format: open", path, -1)
	}
	defer f.Close()
	head := make([]byte, 4096)
	n, err := f.ReadAt(head, 0)
	if err != nil && err != io.EOF {
		return "", disk.Wrap(err, "format: read", path, 0)
	}
	head = head[:n]
	var tail []byte
	if st, err := f.Stat(); err == nil && st.Size() >= 1024 {
		tail = make([]byte, 512)
		if _, err := f.ReadAt(tail, st.Size()-512); err != nil {
			return "", disk.Wrap(err, "format: read", path, st.Size()-512)
		}
	}
	if name := Foreign(head, tail); name != "" {
		return "", disk.Errorf(disk.ErrNotSupported, "format: %s is a %s image, which vdisk does not read (convert it with qemu-img convert -O vmdk, or give -f raw to read its container as raw bytes)", path, name)
	}
	return Detect(head), nil
}

// Open opens the image at path in its format (probed unless o.Format is
// set) and returns it with the format.
func Open(ctx context.Context, path string, o *OpenOptions) (disk.Disk, Format, error) {
	var opts OpenOptions
	if o != nil {
		opts = *o
	}
	f := opts.Format
	if f == "" {
		var err error
		if f, err = DetectFile(opts.fs(), path); err != nil {
			return nil, "", err
		}
	}
	switch f {
	case Raw:
		d, err := raw.Open(ctx, path, &raw.Options{ReadOnly: opts.ReadOnly, Unbuffered: opts.Unbuffered, ForceShare: opts.ForceShare, FS: opts.FS})
		if err != nil {
			return nil, "", err
		}
		return d, Raw, nil
	case VMDK:
		d, err := vmdk.Open(ctx, path, &vmdk.OpenOptions{ReadOnly: opts.ReadOnly, SingleLink: opts.SingleLink,
			IgnoreCID: opts.IgnoreCID, Unbuffered: opts.Unbuffered, Salvage: opts.Salvage, ForceShare: opts.ForceShare, FS: opts.FS})
		if err != nil {
			return nil, "", err
		}
		return d, VMDK, nil
	}
	return nil, "", disk.Errorf(disk.ErrNotSupported, "format: unknown format %q", f)
}

// Create makes a new image of size bytes in format f and opens it for
// writing. It never overwrites an existing file.
func Create(ctx context.Context, path string, f Format, size int64, o *CreateOptions) (disk.Disk, error) {
	var opts CreateOptions
	if o != nil {
		opts = *o
	}
	switch f {
	case Raw:
		return raw.Create(ctx, path, size, &raw.Options{FS: opts.FS})
	case VMDK:
		vo := opts.VMDK
		if vo.FS == nil {
			vo.FS = opts.FS
		}
		return vmdk.Create(ctx, path, size, &vo)
	}
	return nil, disk.Errorf(disk.ErrNotSupported, "format: unknown format %q", f)
}
