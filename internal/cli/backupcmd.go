package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/vdisk-project/vdisk"
	"github.com/vdisk-project/vdisk/backup"
	"github.com/vdisk-project/vdisk/backup/source"
	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/nbd"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func cmdBackup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("backup", flag.ContinueOnError)
	var rf repoFlags
	rf.register(fs)
	var tags multiFlag
	fs.Var(&tags, "tag", "tag the point (repeatable)")
	bitmap := fs.String("bitmap", "", "NBD sources: the dirty bitmap (qemu:dirty-bitmap:NAME) that says what changed since the last point")
	full := fs.Bool("full", false, "read every allocated area, ignoring change tracking (the point still stores only new chunks)")
	noResume := fs.Bool("no-resume", false, "do not continue an interrupted backup of the same source; read everything again")
	rereadPartial := fs.Bool("reread-partial", false, "read a partly changed chunk whole from the source instead of completing it from the previous point's copy")
	jobs := fs.Int("j", 4, "chunks read and compressed at once")
	checkpoint := fs.Int("checkpoint", 0, "save resume state every N chunks (default 256); an interrupted backup continues from it")
	prog := fs.String("progress", "auto", "progress: auto (a bar on a terminal), json (one JSON line per update on stderr) or none")
	output := fs.String("output", "human", "output format: human or json")
	metricsFile := fs.String("metrics-file", "", "write the backups' figures to this file in Prometheus text format (for node_exporter's textfile collector), replacing it atomically")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("backup takes one or more sources: images, NBD URIs, vdisk:vm/NAME or vdisk:disk/NAME")
	}
	switch *prog {
	case "auto", "json", "none":
	default:
		return usagef("--progress must be auto, json or none")
	}
	repo, err := rf.open(ctx, stderr)
	if err != nil {
		return err
	}
	defer repo.Close()
	points, err := repo.Points(ctx)
	if err != nil {
		return err
	}
	var conn *vdisk.Conn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	var results []backupResult
	for _, spec := range pos {
		if strings.HasPrefix(spec, "vdisk:") && conn == nil {
			if conn, err = hostConn(ctx, spec); err != nil {
				return err
			}
		}
		res, err := backupOne(ctx, repo, points, conn, spec, backupFlags{tags: tags, bitmap: *bitmap, full: *full, noResume: *noResume, rereadPartial: *rereadPartial, jobs: *jobs, progress: *prog, checkpoint: *checkpoint}, stderr)
		if err != nil {
			return fmt.Errorf("backup of %s: %w", spec, err)
		}
		results = append(results, res)
		if *output != "json" {
			printBackup(stdout, res)
		}
	}
	if *metricsFile != "" {
		if err := writeBackupMetrics(*metricsFile, results); err != nil {
			return err
		}
	}
	if *output == "json" {
		return writeJSON(stdout, results)
	}
	return nil
}

// writeBackupMetrics writes the figures of the backups just made in
// Prometheus' text exposition format, one series per source.
func writeBackupMetrics(path string, results []backupResult) error {
	var b strings.Builder
	type metric struct {
		name, help, typ string
		value           func(backupResult) float64
	}
	ms := []metric{
		{"vdisk_backup_last_success_timestamp_seconds", "When the source's last backup finished.", "gauge", func(backupResult) float64 { return float64(time.Now().Unix()) }},
		{"vdisk_backup_duration_seconds", "How long the source's last backup took.", "gauge", func(r backupResult) float64 { return r.Summary.Duration.Seconds() }},
		{"vdisk_backup_read_bytes", "Bytes the last backup read from the source.", "gauge", func(r backupResult) float64 { return float64(r.Summary.BytesRead) }},
		{"vdisk_backup_new_bytes", "Bytes of chunks the repository did not hold.", "gauge", func(r backupResult) float64 { return float64(r.Summary.BytesNew) }},
		{"vdisk_backup_deduplicated_bytes", "Bytes read that the repository already held.", "gauge", func(r backupResult) float64 { return float64(r.Summary.BytesDeduplicated) }},
		{"vdisk_backup_unchanged_bytes", "Bytes taken from the previous point without reading.", "gauge", func(r backupResult) float64 { return float64(r.Summary.BytesUnchanged) }},
		{"vdisk_backup_stored_bytes", "Bytes written to the repository's storage.", "gauge", func(r backupResult) float64 { return float64(r.Summary.BytesStored) }},
		{"vdisk_backup_incremental", "1 when the last backup was incremental.", "gauge", func(r backupResult) float64 {
			if r.Parent != "" {
				return 1
			}
			return 0
		}},
	}
	for _, m := range ms {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", m.name, m.help, m.name, m.typ)
		for _, r := range results {
			fmt.Fprintf(&b, "%s{source=\"%s\"} %g\n", m.name, promLabel.Replace(r.Source), m.value(r))
		}
	}
	return disk.WriteFileAtomic(disk.OSFS{}, path, []byte(b.String()), 0o644)
}

type backupFlags struct {
	tags     []string
	bitmap   string
	full     bool
	noResume bool
	// rereadPartial reads partly changed chunks whole (MergeBelow < 0).
	rereadPartial bool
	jobs          int
	progress      string
	checkpoint    int
}

// backupResult is what one source's backup made, and the JSON output.
type backupResult struct {
	Point   string            `json:"point"`
	Source  string            `json:"source"`
	Parent  string            `json:"parent,omitempty"`
	Disks   []string          `json:"disks"`
	Full    map[string]string `json:"full,omitempty"` // disk → why it was read whole
	Summary backup.Summary    `json:"summary"`
}

// latest is the newest point of a source.
func latest(points []*backup.Point, src string) *backup.Point {
	var p *backup.Point
	for _, q := range points {
		if q.Source == src && (p == nil || q.Time.After(p.Time)) {
			p = q
		}
	}
	return p
}

func backupOne(ctx context.Context, repo *backup.Repository, points []*backup.Point, conn *vdisk.Conn, spec string, f backupFlags, stderr io.Writer) (backupResult, error) {
	label := source.Label(spec)
	parent := latest(points, label)
	if f.full {
		parent = nil
	}
	o := source.Options{Conn: conn, Bitmap: f.bitmap, Incremental: parent != nil, Identity: "vdisk backup"}
	if parent != nil {
		o.Prev = map[string]string{}
		for _, d := range parent.Disks {
			o.Prev[d.Name] = d.ChangeID
		}
	}
	if isURI(spec) {
		o.NBD = &nbd.ClientOptions{Thumbprint: getenv("VDISK_NBD_THUMBPRINT")}
	}
	src, err := source.Open(ctx, spec, o)
	if err != nil {
		return backupResult{}, err
	}
	defer src.Close(ctx)
	res := backupResult{Source: label, Full: map[string]string{}}
	bo := backup.BackupOptions{Source: label, Tags: f.tags, Config: src.Config, Parent: parent, Concurrency: f.jobs, NoResume: f.noResume, CheckpointEvery: f.checkpoint}
	if f.rereadPartial {
		bo.MergeBelow = -1
	}
	for _, d := range src.Disks {
		sd := backup.SourceDisk{Name: d.Name, Disk: d.Disk, ChangeID: d.ChangeID}
		if parent != nil && parent.Disk(d.Name) != nil && d.Changed != nil {
			sd.Changed = d.Changed
		} else if d.Full != "" {
			res.Full[d.Name] = d.Full
		}
		bo.Disks = append(bo.Disks, sd)
		res.Disks = append(res.Disks, d.Name)
	}
	finish := func() {}
	switch {
	case f.progress == "json":
		bo.Progress = jsonProgress(stderr, label)
	case f.progress == "auto" && isTerminal(stderr):
		bo.Progress, finish = diskBars(stderr, label, src.Disks)
	}
	p, sum, err := repo.Backup(ctx, bo)
	finish()
	if err != nil {
		return res, err
	}
	if err := src.Close(ctx); err != nil {
		// The point is safe; what failed is the host's cleanup.
		fmt.Fprintf(stderr, "vdisk backup: %s: cleanup after the backup: %v\n", spec, err)
	}
	res.Point, res.Summary = p.ID, sum
	if parent != nil {
		res.Parent = parent.ID
	}
	return res, nil
}

// jsonProgress writes one JSON line per disk at most every second, and
// each disk's last one.
func jsonProgress(w io.Writer, src string) func(backup.Progress) {
	var mu sync.Mutex
	last := map[string]time.Time{}
	enc := json.NewEncoder(w)
	return func(p backup.Progress) {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(last[p.Disk]) < time.Second && p.Done < p.Total {
			return
		}
		last[p.Disk] = time.Now()
		enc.Encode(struct {
			Source string  `json:"source"`
			Disk   string  `json:"disk"`
			Done   int64   `json:"done"`
			Total  int64   `json:"total"`
			Read   int64   `json:"read"`
			Rate   float64 `json:"rate"`
		}{src, p.Disk, p.Done, p.Total, p.Read, p.Rate})
	}
}

func printBackup(w io.Writer, r backupResult) {
	s := r.Summary
	kind := "full"
	if r.Parent != "" {
		kind = "incremental on " + short(r.Parent)
	}
	fmt.Fprintf(w, "point %s of %s (%s): %s\n", short(r.Point), r.Source, kind, strings.Join(r.Disks, ", "))
	for d, why := range r.Full {
		if r.Parent != "" {
			fmt.Fprintf(w, "  %s read whole: %s\n", d, why)
		}
	}
	fmt.Fprintf(w, "  read %s, new %s (%s stored), deduplicated %s, zeros %s, holes %s, unchanged %s",
		humanSize(s.BytesRead), humanSize(s.BytesNew), humanSize(s.BytesStored), humanSize(s.BytesDeduplicated),
		humanSize(s.BytesZero), humanSize(s.BytesHole), humanSize(s.BytesUnchanged))
	if s.BytesResumed > 0 {
		fmt.Fprintf(w, ", resumed %s", humanSize(s.BytesResumed))
	}
	fmt.Fprintf(w, " in %s\n", s.Duration.Round(time.Millisecond))
	if s.ChunksChanged > 0 {
		fmt.Fprintf(w, "  changed areas: %s in %d chunks; %d new chunks; %s taken from the parent's chunks instead of read",
			humanSize(s.BytesChanged), s.ChunksChanged, s.NewChunks, humanSize(s.BytesFromParent))
		if s.ParentFallbacks > 0 {
			fmt.Fprintf(w, "; %d chunks read whole (parent's chunk unreadable)", s.ParentFallbacks)
		}
		fmt.Fprintln(w)
	}
}

func short(id string) string { return id[:min(len(id), 8)] }

// diskBars draws one progress bar per disk on a terminal, with the bytes
// dealt with, the rate and the time left; the returned function ends them.
func diskBars(w io.Writer, label string, disks []source.Disk) (func(backup.Progress), func()) {
	p := mpb.New(mpb.WithOutput(w), mpb.WithAutoRefresh(), mpb.WithWidth(30), mpb.WithRefreshRate(150*time.Millisecond))
	bars := map[string]*mpb.Bar{}
	for _, d := range disks {
		name := d.Name
		if len(disks) == 1 {
			name = label
		}
		bars[d.Name] = p.AddBar(d.Disk.Size(),
			mpb.PrependDecorators(decor.Name(name, decor.WC{W: len(name) + 1, C: decor.DindentRight})),
			mpb.AppendDecorators(
				decor.CountersKibiByte("% .1f / % .1f"),
				decor.Name("  "),
				decor.AverageSpeed(decor.SizeB1024(0), "% .1f"),
				decor.Name("  ETA "),
				decor.AverageETA(decor.ET_STYLE_GO),
			))
	}
	var mu sync.Mutex
	update := func(pr backup.Progress) {
		mu.Lock()
		defer mu.Unlock()
		if b := bars[pr.Disk]; b != nil {
			b.SetCurrent(pr.Done)
		}
	}
	finish := func() {
		mu.Lock()
		for _, b := range bars {
			if !b.Completed() {
				b.Abort(false)
			}
		}
		mu.Unlock()
		p.Wait()
	}
	return update, finish
}

// promLabel escapes a label value as Prometheus' text format wants.
var promLabel = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
