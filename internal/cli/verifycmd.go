package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/vdisk-project/vdisk/backup"
)

func cmdVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	var rf repoFlags
	rf.register(fs)
	readData := fs.Bool("read-data", false, "also read every chunk: it must decrypt, decompress and hash to its ID")
	subset := fs.String("subset", "", "with --read-data, read only part: n/m (the n-th of m slices, by pack) or a percentage such as 10%")
	output := fs.String("output", "human", "output format: human or json")
	showProgress := fs.Bool("p", false, "show progress (the default on a terminal)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("verify takes no arguments")
	}
	opts := backup.VerifyOptions{ReadData: *readData || *subset != ""}
	switch {
	case strings.HasSuffix(*subset, "%"):
		f, err := strconv.ParseFloat(strings.TrimSuffix(*subset, "%"), 64)
		if err != nil || f <= 0 || f > 100 {
			return usagef("--subset %q: a percentage must be in (0, 100]", *subset)
		}
		if f < 100 {
			opts.Fraction = f / 100
		}
	case *subset != "":
		opts.Subset = *subset
	}
	repo, err := rf.open(ctx, stderr)
	if err != nil {
		return err
	}
	defer repo.Close()
	update, finish := progress(stderr, *showProgress || isTerminal(stderr), "verifying")
	if update != nil {
		opts.Progress = func(done, total int) { update(int64(done), int64(total)) }
	}
	rep, err := repo.Verify(ctx, opts)
	finish()
	if err != nil {
		return err
	}
	if *output == "json" {
		if err := writeJSON(stdout, rep); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "%d points, %d disks, %d chunks in %d packs checked", rep.Points, rep.Disks, rep.Chunks, rep.Packs)
		if opts.ReadData {
			fmt.Fprintf(stdout, "; read %d packs (%s), %d chunks", rep.PacksRead, humanSize(rep.BytesRead), rep.ChunksRead)
		}
		fmt.Fprintln(stdout)
		for _, d := range rep.Damage {
			fmt.Fprintf(stdout, "DAMAGE: %s\n", d)
		}
	}
	if !rep.OK() {
		return &exitError{code: ExitCorrupt, msg: fmt.Sprintf("the repository is damaged: %d problems", len(rep.Damage))}
	}
	if *output != "json" {
		fmt.Fprintln(stdout, "no damage found")
	}
	return nil
}
