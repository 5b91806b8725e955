package cli

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/vdisk-project/vdisk/format/vmdk"
)

func cmdCompact(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("compact", flag.ContinueOnError)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("compact takes one image")
	}
	st, err := vmdk.Compact(ctx, pos[0], nil)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Compacted %s: %s -> %s (%s dropped).\n", pos[0], humanSize(st.BytesBefore), humanSize(st.BytesAfter), count(st.Grains, "grain", "grains"))
	return nil
}
