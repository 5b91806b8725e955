package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format"
	"github.com/vdisk-project/vdisk/format/vmdk"
)

type infoOptions struct {
	output       string
	format       string
	forceShare   bool
	backingChain bool
}

// imageInfo is one image of info's JSON output, with qemu-img info's keys
// and meanings (QAPI ImageInfo). Fields are in the order qemu 7.2 prints
// them, so that the two outputs also compare line by line. Sizes describe
// this image alone: for a delta, the delta's own files, not the chain's.
type imageInfo struct {
	BackingFormat string `json:"backing-filename-format,omitempty"`
	VirtualSize   int64  `json:"virtual-size"`
	Filename      string `json:"filename"`
	// ClusterSize is the grain size when every extent has the same one
	// (qemu: absent for flat and mixed images).
	ClusterSize int64  `json:"cluster-size,omitempty"`
	Format      string `json:"format"`
	// ActualSize is the bytes allocated on the host to the image's files
	// (st_blocks × 512, summed); absent when the image is not a file.
	ActualSize     *int64          `json:"actual-size,omitempty"`
	FormatSpecific *formatSpecific `json:"format-specific,omitempty"`
	FullBacking    string          `json:"full-backing-filename,omitempty"`
	Backing        string          `json:"backing-filename,omitempty"`
	// DirtyFlag is set when the image was not closed cleanly: for a VMDK,
	// the unclean-shutdown mark of its sparse header (qemu's vmdk driver
	// never sets it). Absent, like qemu's, when the extents differ in kind.
	DirtyFlag *bool `json:"dirty-flag,omitempty"`
	// VDisk holds what vdisk reports and qemu-img has no key for.
	VDisk *vdiskExtras `json:"vdisk-extras,omitempty"`
}

// formatSpecific is qemu's ImageInfoSpecific for the vmdk kind.
type formatSpecific struct {
	Type string       `json:"type"`
	Data vmdkSpecific `json:"data"`
}

// vmdkSpecific is qemu's ImageInfoSpecificVmdk.
type vmdkSpecific struct {
	CID        uint32           `json:"cid"`
	ParentCID  uint32           `json:"parent-cid"`
	CreateType string           `json:"create-type"`
	Extents    []vmdkExtentInfo `json:"extents"`
}

// vmdkExtentInfo is qemu's VmdkExtentInfo: compressed only when true,
// cluster-size only for sparse extents, format "" for the extent of a
// monolithicSparse or streamOptimized file (its descriptor names none).
type vmdkExtentInfo struct {
	Compressed  bool   `json:"compressed,omitempty"`
	VirtualSize int64  `json:"virtual-size"`
	Filename    string `json:"filename"`
	ClusterSize int64  `json:"cluster-size,omitempty"`
	Format      string `json:"format"`
}

// vdiskExtras are the facts vdisk adds to qemu's.
type vdiskExtras struct {
	// AllocatedSize is the bytes of the virtual disk this image itself
	// holds as data (a delta's own grains, not its parents').
	AllocatedSize int64          `json:"allocated-size"`
	AdapterType   string         `json:"adapter-type,omitempty"`
	HWVersion     string         `json:"hw-version,omitempty"`
	Geometry      *vmdkGeometry  `json:"geometry,omitempty"`
	UUID          string         `json:"uuid,omitempty"`
	Subformat     vmdk.Subformat `json:"subformat,omitempty"` // vmfsThin where create-type says vmfs
}

type vmdkGeometry struct {
	Cylinders uint64 `json:"cylinders"`
	Heads     uint32 `json:"heads"`
	Sectors   uint32 `json:"sectors"`
}

func cmdInfo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o infoOptions
	fs := flag.NewFlagSet("info", flag.ContinueOnError)
	fs.StringVar(&o.output, "output", "human", "output format: human or json")
	fs.StringVar(&o.format, "f", "", "image format (default: probe)")
	forceShareFlags(fs, &o.forceShare)
	fs.BoolVar(&o.backingChain, "backing-chain", false, "describe every image of the chain, the leaf first (json: a list)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("info takes one image")
	}
	return runInfo(ctx, o, pos[0], stdout, stderr)
}

func runInfo(ctx context.Context, o infoOptions, name string, stdout, stderr io.Writer) error {
	if err := checkOutput(o.output); err != nil {
		return err
	}
	d, f, err := openImage(ctx, name, o.format, format.OpenOptions{ReadOnly: true, IgnoreCID: true, ForceShare: o.forceShare})
	if err != nil && errors.Is(err, disk.ErrNotFound) && !o.backingChain {
		// Like qemu-img info, describe a delta whose parent is missing.
		if _, serr := os.Stat(name); serr == nil {
			if d1, f1, err1 := openImage(ctx, name, o.format, format.OpenOptions{ReadOnly: true, SingleLink: true, ForceShare: o.forceShare}); err1 == nil {
				d, f, err = d1, f1, nil
			}
		}
	}
	if err != nil {
		return err
	}
	defer d.Close()
	var list []imageInfo
	if vd, ok := d.(*vmdk.Disk); ok {
		var short []string
		list, short, err = vmdkInfos(ctx, vd, name)
		for _, w := range short {
			// qemu-img info is silent; a user about to trust the image
			// should hear it.
			fmt.Fprintf(stderr, "vdisk info: warning: %s\n", w)
		}
	} else {
		list, err = plainInfo(ctx, d, name, f)
	}
	if err != nil {
		return err
	}
	if !o.backingChain {
		list = list[:1]
	}
	if o.output == "json" {
		if o.backingChain {
			return writeJSON(stdout, list)
		}
		return writeJSON(stdout, list[0])
	}
	for i, in := range list {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		printInfo(stdout, in)
	}
	return nil
}

// plainInfo describes a raw image, an NBD export or a host disk.
func plainInfo(ctx context.Context, d disk.Disk, name string, f format.Format) ([]imageInfo, error) {
	in := imageInfo{Filename: name, Format: string(f), VirtualSize: d.Size()}
	if st, err := os.Stat(name); err == nil {
		// A file: qemu reports its allocation and a (clear) dirty flag;
		// for an NBD export it has neither.
		in.ActualSize, in.DirtyFlag = new(allocatedOnDisk(st)), new(false)
	}
	x := &vdiskExtras{}
	if err := disk.Extents(ctx, d, 0, d.Size(), func(e disk.Extent) error {
		if e.Flags.Data() {
			x.AllocatedSize += e.Len
		}
		return nil
	}); err != nil {
		return nil, err
	}
	in.VDisk = x
	return []imageInfo{in}, nil
}

// vmdkInfos describes each link of a VMDK chain, the leaf first, and says
// which files are shorter than the data they reference (truncated: the
// missing grains read as zeros, or fail).
func vmdkInfos(ctx context.Context, d *vmdk.Disk, name string) ([]imageInfo, []string, error) {
	chain := d.Chain()
	own := make([]int64, len(chain)) // data bytes each link holds
	ends := map[string]int64{}       // the end of the data referenced in each file
	if err := d.Map(ctx, 0, d.Size(), func(m vmdk.Mapping) error {
		if m.Flags&(disk.Hole|disk.Zero) == 0 {
			own[m.Link] += m.Len
		}
		if m.File != "" && m.FileOff >= 0 && m.Flags&disk.Zero == 0 {
			ends[m.File] = max(ends[m.File], m.FileOff+m.Len)
		}
		return nil
	}); err != nil {
		return nil, nil, err
	}
	var short []string
	for f, end := range ends {
		if st, err := os.Stat(f); err == nil && st.Size() < end {
			short = append(short, fmt.Sprintf("%s is truncated: it ends at byte %d, but holds data up to byte %d (those grains read as zeros; vdisk check tells more)", f, st.Size(), end))
		}
	}
	slices.Sort(short)
	out := make([]imageInfo, len(chain))
	for i, l := range chain {
		in := imageInfo{Filename: name, Format: string(format.VMDK), VirtualSize: l.Capacity}
		if i > 0 {
			in.Filename = out[i-1].FullBacking
		}
		spec := vmdkSpecific{CID: l.CID, ParentCID: l.ParentCID, CreateType: l.CreateType}
		var alloc int64
		counted := map[string]bool{}
		count := func(p string) {
			if p == "" || counted[p] {
				return
			}
			counted[p] = true
			if st, err := os.Stat(p); err == nil {
				alloc += allocatedOnDisk(st)
			}
		}
		count(l.Path)
		for _, e := range l.Extents {
			count(e.Path)
			x := vmdkExtentInfo{Compressed: e.Compressed, VirtualSize: e.Size, Filename: e.Path, ClusterSize: e.GrainSize, Format: e.Type}
			// A parent's files are named after the name it is given here.
			if e.Path == l.Path {
				x.Filename = in.Filename
			} else if rel, ok := strings.CutPrefix(e.Path, dirPrefix(l.Path)); ok && !strings.HasPrefix(rel, "/") {
				x.Filename = dirPrefix(in.Filename) + rel
			}
			if l.SelfContained {
				x.Format = ""
			}
			spec.Extents = append(spec.Extents, x)
		}
		in.ActualSize = &alloc
		in.FormatSpecific = &formatSpecific{Type: "vmdk", Data: spec}
		// qemu reports a cluster size and a dirty flag only when every
		// extent is of one kind: all flat, or all sparse with one grain
		// size and one compression.
		same := len(l.Extents) > 0
		for _, e := range l.Extents {
			a := l.Extents[0]
			same = same && e.Compressed == a.Compressed && e.GrainSize == a.GrainSize
		}
		if same {
			in.ClusterSize = l.Extents[0].GrainSize
			in.DirtyFlag = new(l.Unclean)
		}
		if l.ParentHint != "" {
			in.Backing, in.BackingFormat = l.ParentHint, string(format.VMDK)
			// qemu joins the hint to the child's directory as strings;
			// where vdisk found the parent elsewhere (a Windows hint),
			// it names the file it opened.
			in.FullBacking = joinHint(in.Filename, l.ParentHint)
			if i+1 < len(chain) && filepath.Clean(in.FullBacking) != filepath.Clean(chain[i+1].Path) {
				in.FullBacking = chain[i+1].Path
			}
		}
		in.VDisk = &vdiskExtras{AllocatedSize: own[i]}
		out[i] = in
	}
	vi := d.Info()
	x := out[0].VDisk
	x.AdapterType, x.HWVersion, x.UUID = vi.Adapter, vi.HWVersion, vi.UUID
	if g := vi.Geometry; g != (vmdk.Geometry{}) {
		x.Geometry = &vmdkGeometry{g.Cylinders, g.Heads, g.Sectors}
	}
	if string(vi.CreateType) != chain[0].CreateType {
		x.Subformat = vi.CreateType
	}
	return out, short, nil
}

// joinHint returns a parent hint as qemu resolves it: an absolute hint as
// it is, a relative one after the child's directory.
func joinHint(child, hint string) string {
	if strings.HasPrefix(hint, "/") {
		return hint
	}
	return dirPrefix(child) + hint
}

// qemuSize formats bytes as qemu-img info does: in the largest binary unit
// that keeps the number under 1000, with three significant digits
// ("1.15 MiB", "12 KiB", "0.977 MiB").
func qemuSize(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	_, e := math.Frexp(float64(n) / (1000.0 / 1024.0))
	i := min(max((e-1)/10, 0), len(units)-1)
	return strconv.FormatFloat(float64(n)/float64(uint64(1)<<(10*i)), 'g', 3, 64) + " " + units[i]
}

// dirPrefix returns the directory part of a path, up to its last slash.
func dirPrefix(p string) string {
	return p[:strings.LastIndexByte(p, '/')+1]
}

// printInfo prints one image the way qemu-img info does, then vdisk's
// extras.
func printInfo(w io.Writer, in imageInfo) {
	fmt.Fprintf(w, "image: %s\nfile format: %s\nvirtual size: %s (%d bytes)\n", in.Filename, in.Format, qemuSize(in.VirtualSize), in.VirtualSize)
	if in.ActualSize != nil {
		fmt.Fprintf(w, "disk size: %s\n", qemuSize(*in.ActualSize))
	} else {
		fmt.Fprintf(w, "disk size: unavailable\n")
	}
	if in.ClusterSize != 0 {
		fmt.Fprintf(w, "cluster_size: %d\n", in.ClusterSize)
	}
	if in.DirtyFlag != nil && *in.DirtyFlag {
		fmt.Fprintf(w, "cleanly shut down: no (run 'vdisk check -r leaks')\n")
	}
	if in.Backing != "" {
		fmt.Fprintf(w, "backing file: %s", in.Backing)
		if in.FullBacking != "" && in.FullBacking != in.Backing {
			fmt.Fprintf(w, " (actual path: %s)", in.FullBacking)
		}
		fmt.Fprintf(w, "\nbacking file format: %s\n", in.BackingFormat)
	}
	if fs := in.FormatSpecific; fs != nil {
		printVMDKInfo(w, fs.Data)
	}
	if x := in.VDisk; x != nil {
		printExtras(w, x)
	}
}

// printVMDKInfo prints qemu-img info's "Format specific information" of a
// VMDK.
func printVMDKInfo(w io.Writer, v vmdkSpecific) {
	fmt.Fprintf(w, "Format specific information:\n    cid: %d\n    parent cid: %d\n    create type: %s\n    extents:\n", v.CID, v.ParentCID, v.CreateType)
	for i, e := range v.Extents {
		fmt.Fprintf(w, "        [%d]:\n", i)
		if e.Compressed {
			fmt.Fprintf(w, "            compressed: true\n")
		}
		fmt.Fprintf(w, "            virtual size: %d\n            filename: %s\n", e.VirtualSize, e.Filename)
		if e.ClusterSize != 0 {
			fmt.Fprintf(w, "            cluster size: %d\n", e.ClusterSize)
		}
		fmt.Fprintf(w, "            format: %s\n", e.Format)
	}
}

// printExtras prints vdisk's additions to qemu-img info.
func printExtras(w io.Writer, x *vdiskExtras) {
	fmt.Fprintf(w, "vdisk information:\n    allocated: %s\n", qemuSize(x.AllocatedSize))
	if x.Subformat != "" {
		fmt.Fprintf(w, "    subformat: %s\n", x.Subformat)
	}
	if x.AdapterType != "" {
		fmt.Fprintf(w, "    adapter type: %s\n", x.AdapterType)
	}
	if x.HWVersion != "" {
		fmt.Fprintf(w, "    hardware version: %s\n", x.HWVersion)
	}
	if g := x.Geometry; g != nil {
		fmt.Fprintf(w, "    geometry: %d/%d/%d\n", g.Cylinders, g.Heads, g.Sectors)
	}
	if x.UUID != "" {
		fmt.Fprintf(w, "    uuid: %s\n", x.UUID)
	}
}
