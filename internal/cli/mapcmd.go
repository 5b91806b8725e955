package cli

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format"
	"github.com/vdisk-project/vdisk/format/raw"
	"github.com/vdisk-project/vdisk/format/vmdk"
)

type mapOptions struct {
	forceShare bool // -U
	output     string
	format     string
	chunkSize  string
}

// mapEntry is one run of map's output: qemu-img map's MapEntry, with its
// meanings. Depth is the link of the chain that holds the run (0 is the
// image itself); present says whether some link holds it, data whether its
// bytes are stored in a file (File, at Offset when HasOffset: compressed
// grains have no offset), zero whether it reads as zeros.
type mapEntry struct {
	Start, Length int64
	Depth         int
	Present       bool
	Zero          bool
	Data          bool
	Compressed    bool
	HasOffset     bool
	Offset        int64
	File          string // the file at Offset; "" without an offset
}

// mergeable reports whether next continues e, by qemu-img map's rule: the
// same flags, depth and file, and, with offsets, contiguous in the file.
func (e *mapEntry) mergeable(next *mapEntry) bool {
	if e.Length == 0 {
		return false
	}
	if e.Zero != next.Zero || e.Data != next.Data || e.Compressed != next.Compressed ||
		e.Depth != next.Depth || e.Present != next.Present || e.HasOffset != next.HasOffset || e.File != next.File {
		return false
	}
	return !e.HasOffset || e.Offset+e.Length == next.Offset
}

// writeJSON writes e as qemu-img map --output=json writes an entry.
func (e *mapEntry) writeJSON(w io.Writer) {
	fmt.Fprintf(w, `{ "start": %d, "length": %d, "depth": %d, "present": %t, "zero": %t, "data": %t, "compressed": %t`,
		e.Start, e.Length, e.Depth, e.Present, e.Zero, e.Data, e.Compressed)
	if e.HasOffset {
		fmt.Fprintf(w, `, "offset": %d`, e.Offset)
	}
	io.WriteString(w, "}")
}

// cHex formats n like C's "%#x": 0 has no 0x prefix.
func cHex(n int64) string {
	if n == 0 {
		return "0"
	}
	return fmt.Sprintf("%#x", n)
}

func cmdMap(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o mapOptions
	fs := flag.NewFlagSet("map", flag.ContinueOnError)
	fs.StringVar(&o.output, "output", "human", "output format: human or json")
	fs.StringVar(&o.format, "f", "", "image format (default: probe)")
	forceShareFlags(fs, &o.forceShare)
	fs.StringVar(&o.chunkSize, "chunk-size", "", "list allocated chunks of this size instead of runs (VDDK QueryAllocatedBlocks)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("map takes one image")
	}
	return runMap(ctx, o, pos[0], stdout)
}

func runMap(ctx context.Context, o mapOptions, name string, stdout io.Writer) error {
	if err := checkOutput(o.output); err != nil {
		return err
	}
	d, _, err := openImage(ctx, name, o.format, format.OpenOptions{ReadOnly: true, ForceShare: o.forceShare})
	if err != nil {
		return err
	}
	defer d.Close()
	if o.chunkSize != "" {
		return mapChunks(ctx, d, o, stdout)
	}
	bw := bufio.NewWriter(stdout)
	p := &mapPrinter{w: bw, name: name, json: o.output == "json"}
	if !p.json {
		fmt.Fprintf(bw, "%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File")
	}
	err = mapEntries(ctx, d, name, p.add)
	if err == nil {
		err = p.end()
	}
	if ferr := bw.Flush(); err == nil {
		err = ferr
	}
	return err
}

// mapPrinter merges entries by qemu's rule and prints each merged run.
type mapPrinter struct {
	w     io.Writer
	name  string
	json  bool
	cur   mapEntry
	count int
}

func (p *mapPrinter) add(e mapEntry) error {
	if p.cur.mergeable(&e) {
		p.cur.Length += e.Length
		return nil
	}
	if p.cur.Length > 0 {
		if err := p.print(&p.cur); err != nil {
			return err
		}
	}
	p.cur = e
	return nil
}

func (p *mapPrinter) end() error {
	if p.cur.Length > 0 {
		if err := p.print(&p.cur); err != nil {
			return err
		}
	}
	if p.json {
		if p.count == 0 {
			io.WriteString(p.w, "[")
		}
		io.WriteString(p.w, "]\n")
	}
	return nil
}

func (p *mapPrinter) print(e *mapEntry) error {
	p.count++
	if p.json {
		if p.count == 1 {
			io.WriteString(p.w, "[")
		} else {
			io.WriteString(p.w, ",\n")
		}
		e.writeJSON(p.w)
		return nil
	}
	// Like qemu-img, the human map lists only the runs stored in a file,
	// and cannot show a run whose bytes have no offset.
	if e.Data && !e.HasOffset {
		return disk.Errorf(disk.ErrNotSupported, "%s: the data at %d is compressed and has no offset in a file to show; use --output=json", p.name, e.Start)
	}
	if e.Data && !e.Zero {
		fmt.Fprintf(p.w, "%-16s%-16s%-16s%s\n", cHex(e.Start), cHex(e.Length), cHex(e.Offset), e.File)
	}
	return nil
}

// mapEntries reports the runs of d in order, unmerged, with qemu's flags.
func mapEntries(ctx context.Context, d disk.Disk, name string, fn func(mapEntry) error) error {
	switch d := d.(type) {
	case *vmdk.Disk:
		return d.Map(ctx, 0, d.Size(), func(m vmdk.Mapping) error {
			e := mapEntry{Start: m.Off, Length: m.Len, Depth: m.Link, Present: m.Flags&disk.Hole == 0,
				Zero: m.Flags&disk.Zero != 0, Data: m.File != "", Compressed: m.Compressed}
			if m.FileOff >= 0 {
				e.HasOffset, e.Offset, e.File = true, m.FileOff, m.File
			}
			return fn(e)
		})
	case *raw.Disk:
		// qemu's raw driver passes the file's own status through: every
		// byte is present at its own offset, and holes read as zeros.
		return disk.Extents(ctx, d, 0, d.Size(), func(x disk.Extent) error {
			return fn(mapEntry{Start: x.Off, Length: x.Len, Present: true, Zero: x.Flags&disk.Zero != 0,
				Data: x.Flags&disk.Hole == 0, HasOffset: true, Offset: x.Off, File: name})
		})
	}
	// An NBD export or a host disk: like qemu's NBD driver, each byte is at
	// its own offset of the export, and a range is present when it holds
	// data or is known to read as zeros.
	return disk.Extents(ctx, d, 0, d.Size(), func(x disk.Extent) error {
		return fn(mapEntry{Start: x.Off, Length: x.Len, Present: x.Flags&disk.Hole == 0 || x.Flags&disk.Zero != 0,
			Zero: x.Flags&disk.Zero != 0, Data: x.Flags&disk.Hole == 0, HasOffset: true, Offset: x.Off, File: name})
	})
}

// mapChunks lists the chunks of chunk-size bytes that hold any allocated
// data, merged into runs, like VixDiskLib_QueryAllocatedBlocks.
func mapChunks(ctx context.Context, d disk.Disk, o mapOptions, stdout io.Writer) error {
	chunk, err := parseSize(o.chunkSize)
	if err != nil {
		return err
	}
	// VDDK's bounds: 64 KiB to 64 MiB chunks, in whole sectors.
	if chunk < 64<<10 || chunk > 64<<20 || chunk%disk.SectorSize != 0 {
		return disk.Errorf(disk.ErrInvalid, "chunk size must be between 64 KiB and 64 MiB in whole sectors")
	}
	type block struct {
		Offset int64 `json:"offset"`
		Length int64 `json:"length"`
	}
	var out []block
	err = disk.Extents(ctx, d, 0, d.Size(), func(e disk.Extent) error {
		if e.Flags&disk.Hole != 0 {
			return nil
		}
		start := e.Off / chunk * chunk
		end := min((e.End()+chunk-1)/chunk*chunk, d.Size())
		if n := len(out); n > 0 && out[n-1].Offset+out[n-1].Length >= start {
			out[n-1].Length = max(out[n-1].Length, end-out[n-1].Offset)
			return nil
		}
		out = append(out, block{start, end - start})
		return nil
	})
	if err != nil {
		return err
	}
	if o.output == "json" {
		if out == nil {
			out = []block{}
		}
		return writeJSON(stdout, out)
	}
	for _, b := range out {
		fmt.Fprintf(stdout, "%d %d\n", b.Offset, b.Length)
	}
	return nil
}
