package cli

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format"
	"github.com/vdisk-project/vdisk/format/vmdk"
)

func cmdMeta(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("meta", flag.ContinueOnError)
	output := fs.String("output", "human", "output format: human or json")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 1 || len(pos) > 3 {
		return usagef("meta takes an image, and optionally a key and a value")
	}
	return runMeta(ctx, *output, pos, stdout)
}

func runMeta(ctx context.Context, output string, pos []string, stdout io.Writer) (err error) {
	write := len(pos) == 3
	d, _, err := openImage(ctx, pos[0], "", format.OpenOptions{ReadOnly: !write})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := d.Close(); err == nil {
			err = cerr
		}
	}()
	vd, ok := d.(*vmdk.Disk)
	if !ok {
		return disk.Errorf(disk.ErrNotSupported, "%s has no metadata (only vmdk images do)", pos[0])
	}
	switch len(pos) {
	case 1:
		m := map[string]string{}
		for _, k := range vd.MetadataKeys() {
			m[k], _ = vd.Metadata(k)
		}
		if output == "json" {
			return writeJSON(stdout, m)
		}
		for _, k := range sortedKeys(m) {
			fmt.Fprintf(stdout, "%s = %s\n", k, m[k])
		}
	case 2:
		v, err := vd.Metadata(pos[1])
		if err != nil {
			return err
		}
		if output == "json" {
			return writeJSON(stdout, map[string]string{pos[1]: v})
		}
		fmt.Fprintln(stdout, v)
	case 3:
		return vd.SetMetadata(pos[1], pos[2])
	}
	return nil
}
