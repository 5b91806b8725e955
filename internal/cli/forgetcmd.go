package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/vdisk-project/vdisk/backup"
)

func cmdForget(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("forget", flag.ContinueOnError)
	var rf repoFlags
	rf.register(fs)
	var pol backup.Policy
	fs.IntVar(&pol.KeepLast, "keep-last", 0, "keep the last N points of each source")
	fs.IntVar(&pol.KeepHourly, "keep-hourly", 0, "keep the last point of each of the last N hours with points")
	fs.IntVar(&pol.KeepDaily, "keep-daily", 0, "… of each of the last N days")
	fs.IntVar(&pol.KeepWeekly, "keep-weekly", 0, "… of each of the last N weeks")
	fs.IntVar(&pol.KeepMonthly, "keep-monthly", 0, "… of each of the last N months")
	fs.IntVar(&pol.KeepYearly, "keep-yearly", 0, "… of each of the last N years")
	var keepTags multiFlag
	fs.Var(&keepTags, "keep-tag", "keep every point with this tag (repeatable)")
	dryRun := fs.Bool("dry-run", false, "say what would be forgotten (and pruned) without changing anything")
	prune := fs.Bool("prune", false, "then delete the chunks no point references any more")
	grace := fs.Duration("grace", 0, "with --prune: delete nothing younger than this, so that backups running now keep their chunks (default 24h)")
	output := fs.String("output", "human", "output format: human or json")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("forget takes no arguments: say what to keep with --keep-*")
	}
	pol.KeepTags = keepTags
	hasPolicy := pol.KeepLast+pol.KeepHourly+pol.KeepDaily+pol.KeepWeekly+pol.KeepMonthly+pol.KeepYearly > 0 || len(pol.KeepTags) > 0
	if !hasPolicy && !*prune {
		return usagef("forget needs a policy (--keep-last, --keep-daily, … or --keep-tag) or --prune")
	}
	repo, err := rf.open(ctx, stderr)
	if err != nil {
		return err
	}
	defer repo.Close()
	type result struct {
		Keep   []string            `json:"keep"`
		Remove []string            `json:"remove"`
		Prune  *backup.PruneResult `json:"prune,omitempty"`
		Why    map[string][]string `json:"reasons,omitempty"`
	}
	res := result{Keep: []string{}, Remove: []string{}}
	if hasPolicy {
		fr, err := repo.Forget(ctx, pol, *dryRun)
		if err != nil {
			return err
		}
		for _, p := range fr.Keep {
			res.Keep = append(res.Keep, p.ID)
		}
		for _, p := range fr.Remove {
			res.Remove = append(res.Remove, p.ID)
		}
		res.Why = fr.Reasons
		if *output != "json" {
			verb := "forgot"
			if *dryRun {
				verb = "would forget"
			}
			for _, p := range fr.Keep {
				fmt.Fprintf(stdout, "keep   %s %s %s (%s)\n", short(p.ID), p.Time.Local().Format("2006-01-02 15:04:05"), p.Source, strings.Join(fr.Reasons[p.ID], ", "))
			}
			for _, p := range fr.Remove {
				fmt.Fprintf(stdout, "forget %s %s %s\n", short(p.ID), p.Time.Local().Format("2006-01-02 15:04:05"), p.Source)
			}
			fmt.Fprintf(stdout, "%s %d points, kept %d\n", verb, len(fr.Remove), len(fr.Keep))
		}
	}
	if *prune {
		g := *grace
		if g == 0 {
			g = backup.DefaultGrace
		}
		pr, err := repo.Prune(ctx, backup.PruneOptions{Grace: g, DryRun: *dryRun})
		if err != nil {
			return err
		}
		res.Prune = pr
		if *output != "json" {
			fmt.Fprintf(stdout, "prune: %d live chunks; %d packs kept, %d condemned (deleted after %s), %d deleted (%s); %s dead in partly live packs\n",
				pr.LiveChunks, pr.PacksKept, pr.PacksCondemned, g.Round(time.Minute), pr.PacksDeleted, humanSize(pr.BytesDeleted), humanSize(pr.BytesUnused))
		}
	}
	if *output == "json" {
		return writeJSON(stdout, res)
	}
	return nil
}
