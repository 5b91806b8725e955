package cli

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format"
)

type mapOptions struct {
	forceShare bool // -U
	output     string
	format     string
	chunkSize  string
}

// mapEntry is one run of map's output, with qemu-img map's JSON fields.
type mapEntry struct {
	Start  int64 `json:"start"`
	Length int64 `json:"length"`
	Data   bool  `json:"data"`
	Zero   bool  `json:"zero"`
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
	d, _, err := openImage(ctx, name, o.format, format.OpenOptions{ReadOnly: true, ForceShare: o.forceShare})
	if err != nil {
		return err
	}
	defer d.Close()
	if o.chunkSize != "" {
		return mapChunks(ctx, d, o, stdout)
	}
	var out []mapEntry
	err = disk.Extents(ctx, d, 0, d.Size(), func(e disk.Extent) error {
		m := mapEntry{Start: e.Off, Length: e.Len, Data: e.Flags&disk.Hole == 0, Zero: e.Flags&disk.Zero != 0}
		if n := len(out); n > 0 && out[n-1].Data == m.Data && out[n-1].Zero == m.Zero {
			out[n-1].Length += m.Length
			return nil
		}
		out = append(out, m)
		return nil
	})
	if err != nil {
		return err
	}
	if o.output == "json" {
		if out == nil {
			out = []mapEntry{}
		}
		return writeJSON(stdout, out)
	}
	fmt.Fprintf(stdout, "%-20s %-20s %s\n", "Offset", "Length", "Mapped")
	for _, m := range out {
		if m.Data && !m.Zero {
			fmt.Fprintf(stdout, "%#-20x %#-20x %s\n", m.Start, m.Length, name)
		}
	}
	return nil
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
