package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vdisk-project/vdisk/backup"
	"github.com/vdisk-project/vdisk/disk"
)

// pointJSON is one object of `points --output=json`.
type pointJSON struct {
	ID       string          `json:"id"`
	Time     time.Time       `json:"time"`
	Source   string          `json:"source"`
	Parent   string          `json:"parent,omitempty"`
	Hostname string          `json:"hostname,omitempty"`
	Tags     []string        `json:"tags"`
	Disks    []pointDiskJSON `json:"disks"`
	Size     int64           `json:"size"`
	BytesNew int64           `json:"bytesNew"`
}

type pointDiskJSON struct {
	Name        string `json:"name"`
	Size        int64  `json:"size"`
	ChangeID    string `json:"changeId,omitempty"`
	BytesRead   int64  `json:"bytesRead"`
	BytesNew    int64  `json:"bytesNew"`
	BytesStored int64  `json:"bytesStored"`
}

func cmdPoints(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("points", flag.ContinueOnError)
	var rf repoFlags
	rf.register(fs)
	output := fs.String("output", "human", "output format: human or json")
	src := fs.String("source", "", "only the points of this source")
	var tags multiFlag
	fs.Var(&tags, "tag", "only points with this tag (repeatable: all must match)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("points takes no arguments")
	}
	repo, err := rf.open(ctx, stderr)
	if err != nil {
		return err
	}
	defer repo.Close()
	ps, err := repo.Points(ctx)
	if err != nil {
		return err
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].Time.Before(ps[j].Time) })
	out := []pointJSON{}
	for _, p := range ps {
		if *src != "" && p.Source != *src {
			continue
		}
		if !hasTags(p.Tags, tags) {
			continue
		}
		j := pointJSON{ID: p.ID, Time: p.Time, Source: p.Source, Parent: p.Parent, Hostname: p.Hostname, Tags: p.Tags}
		if j.Tags == nil {
			j.Tags = []string{}
		}
		for _, d := range p.Disks {
			j.Disks = append(j.Disks, pointDiskJSON{d.Name, d.Size, d.ChangeID, d.BytesRead, d.BytesNew, d.BytesStored})
			j.Size += d.Size
			j.BytesNew += d.BytesNew
		}
		out = append(out, j)
	}
	if *output == "json" {
		return writeJSON(stdout, out)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTIME\tSOURCE\tDISKS\tSIZE\tNEW\tTAGS")
	for _, p := range out {
		var names []string
		for _, d := range p.Disks {
			names = append(names, d.Name)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", short(p.ID), p.Time.Local().Format("2006-01-02 15:04:05"), p.Source,
			strings.Join(names, ","), humanSize(p.Size), humanSize(p.BytesNew), dash(strings.Join(p.Tags, ",")))
	}
	return tw.Flush()
}

func hasTags(have, want []string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		if !found {
			return false
		}
	}
	return true
}

// findPoint resolves a point by ID or unique ID prefix.
func findPoint(ctx context.Context, repo *backup.Repository, id string) (*backup.Point, error) {
	if id == "" {
		return nil, usagef("no point given")
	}
	if id == "latest" {
		ps, err := repo.Points(ctx)
		if err != nil {
			return nil, err
		}
		var p *backup.Point
		for _, q := range ps {
			if p == nil || q.Time.After(p.Time) {
				p = q
			}
		}
		if p == nil {
			return nil, disk.Errorf(disk.ErrNotFound, "the repository holds no points")
		}
		return p, nil
	}
	return repo.Point(ctx, id)
}

// splitPointRef splits "POINT[/DISK]" (a disk name may hold '/'s: the
// first separates).
func splitPointRef(s string) (id, diskName string) {
	id, diskName, _ = strings.Cut(s, "/")
	return id, diskName
}

// pointDisk picks the disk of p a command names, or its only disk.
func pointDisk(p *backup.Point, name string) (string, error) {
	if name != "" {
		if p.Disk(name) == nil {
			var names []string
			for _, d := range p.Disks {
				names = append(names, d.Name)
			}
			return "", disk.Errorf(disk.ErrNotFound, "point %s has no disk %q (it has %s)", short(p.ID), name, strings.Join(names, ", "))
		}
		return name, nil
	}
	if len(p.Disks) == 1 {
		return p.Disks[0].Name, nil
	}
	return "", usagef("point %s has %d disks: name one as POINT/DISK", short(p.ID), len(p.Disks))
}

// openPointDisk opens "point:ID[/DISK]" read-only, the repository from
// $VDISK_REPO (instant restore: every image command reads a point).
func openPointDisk(ctx context.Context, ref string) (disk.Disk, error) {
	rf := repoFlags{}
	repo, err := rf.open(ctx, os.Stderr)
	if err != nil {
		return nil, err
	}
	id, name := splitPointRef(ref)
	p, err := findPoint(ctx, repo, id)
	if err != nil {
		repo.Close()
		return nil, err
	}
	if name, err = pointDisk(p, name); err != nil {
		repo.Close()
		return nil, err
	}
	d, err := repo.OpenDisk(ctx, p, name)
	if err != nil {
		repo.Close()
		return nil, err
	}
	return pointHandle{d, repo}, nil
}

// pointHandle closes its repository with it.
type pointHandle struct {
	*backup.Disk
	repo *backup.Repository
}

func (h pointHandle) Close() error {
	err := h.Disk.Close()
	if cerr := h.repo.Close(); err == nil {
		err = cerr
	}
	return err
}
