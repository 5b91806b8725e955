package cli

import (
	"encoding/json"

	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/vdisk-project/vdisk"
	"github.com/vdisk-project/vdisk/hostapi"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vdisk-project/vdisk/backup"
	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/format"
	"github.com/vdisk-project/vdisk/format/vmdk"
)

func cmdRestore(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("restore", flag.ContinueOnError)
	var rf repoFlags
	rf.register(fl)
	outFormat := fl.String("O", "vmdk", "format of a new target image: vmdk or raw")
	options := fl.String("o", "", "options of a new target image, as for create (subformat=…)")
	showProgress := fl.Bool("p", false, "show progress (the default on a terminal)")
	nj := fl.Int("j", 4, "chunks restored at once")
	cache := fl.String("t", "writeback", "cache mode of a new target image: writeback (durable: synced at the end) or unsafe (never synced, as restic and borg restore)")
	overlayFile := fl.String("overlay", "", "then apply the writes an instant restore kept in this overlay (vdisk export --overlay)")
	pos, err := parse(fl, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("restore takes POINT[/DISK] and a target: a new image, an existing image, an NBD URI, vdisk:disk/NAME, or a directory for every disk")
	}
	repo, err := rf.open(ctx, stderr)
	if err != nil {
		return err
	}
	defer repo.Close()
	id, name := splitPointRef(pos[0])
	p, err := findPoint(ctx, repo, id)
	if err != nil {
		return err
	}
	target := pos[1]
	if vmName, ok := strings.CutPrefix(target, "vdisk:vm/"); ok && name == "" && !strings.Contains(vmName, "/") {
		return restoreVM(ctx, repo, p, vmName, *nj, *showProgress || isTerminal(stderr), stdout, stderr)
	}
	type job struct{ disk, target string }
	var jobs []job
	if name == "" && len(p.Disks) > 1 {
		// Every disk, into a directory.
		if isURI(target) || strings.HasPrefix(target, "vdisk:") {
			return usagef("point %s has %d disks: name one as POINT/DISK to restore into %s", short(p.ID), len(p.Disks), target)
		}
		if err := os.MkdirAll(target, 0o755); err != nil {
			return disk.Wrap(err, "mkdir", target, -1)
		}
		ext := ".vmdk"
		if *outFormat == "raw" {
			ext = ".raw"
		}
		for _, d := range p.Disks {
			jobs = append(jobs, job{d.Name, filepath.Join(target, fileName(d.Name)+ext)})
		}
	} else {
		if name, err = pointDisk(p, name); err != nil {
			return err
		}
		jobs = []job{{name, target}}
	}
	if *overlayFile != "" && len(jobs) > 1 {
		return usagef("--overlay holds the writes of one disk: name it as POINT/DISK")
	}
	if *overlayFile != "" {
		v, err := openOverlayFile(ctx, *overlayFile, "point:"+p.ID+"/"+jobs[0].disk)
		if err != nil {
			return err
		}
		v.Close()
	}
	for _, j := range jobs {
		st, err := restoreDisk(ctx, repo, p, j.disk, j.target, restoreFlags{format: *outFormat, options: *options, cache: *cache, progress: *showProgress || isTerminal(stderr), jobs: *nj}, stderr)
		if err != nil {
			return fmt.Errorf("restore %s/%s into %s: %w", short(p.ID), j.disk, j.target, err)
		}
		fmt.Fprintf(stdout, "restored %s/%s into %s: wrote %s, zeroed %s, unchanged %s, not touched %s, in %s\n", short(p.ID), j.disk, j.target,
			humanSize(st.Written), humanSize(st.Zeroed), humanSize(st.Unchanged), humanSize(st.Skipped), st.Duration.Round(time.Millisecond))
		if *overlayFile != "" {
			d, _, err := openImage(ctx, j.target, "", format.OpenOptions{})
			if err != nil {
				return err
			}
			n, err := applyOverlay(ctx, *overlayFile, "point:"+p.ID+"/"+j.disk, d)
			if cerr := d.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("apply the overlay %s: %w", *overlayFile, err)
			}
			fmt.Fprintf(stdout, "applied %s of writes from %s\n", humanSize(n), *overlayFile)
		}
	}
	return nil
}

// fileName makes a disk name ("scsi0:0") a file name ("scsi0-0").
func fileName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == ':' || r == '\\' || r < ' ' {
			return '-'
		}
		return r
	}, s)
}

type restoreFlags struct {
	format, options, cache string
	progress               bool
	jobs                   int
}

func restoreDisk(ctx context.Context, repo *backup.Repository, p *backup.Point, name, target string, f restoreFlags, stderr io.Writer) (st backup.RestoreStats, err error) {
	pd := p.Disk(name)
	existing := isURI(target) || strings.HasPrefix(target, "vdisk:")
	// A restore into a new image leaves TARGET.restoring naming the point
	// until it has finished: run again, it continues into the image a
	// killed run left (only chunks that differ are written), or starts
	// that image afresh when the kill came before it could be opened.
	marker := target + ".restoring"
	ref := "point:" + p.ID + "/" + name + "\n"
	if !existing {
		if b, err := os.ReadFile(marker); err == nil && string(b) == ref {
			d, _, err := openImage(ctx, target, "", format.OpenOptions{ReadOnly: true})
			if err == nil && d.Size() >= pd.Size {
				d.Close()
				existing = true
			} else {
				if d != nil {
					d.Close()
				}
				if rerr := os.Remove(target); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
					return st, disk.Wrap(rerr, "remove", target, -1)
				}
			}
		} else if _, serr := os.Stat(target); serr == nil {
			existing = true
		} else if !errors.Is(serr, fs.ErrNotExist) {
			return st, disk.Wrap(serr, "stat", target, -1)
		} else if err := disk.WriteFileAtomic(disk.OSFS{}, marker, []byte(ref), 0o600); err != nil {
			return st, err
		}
		resumed := existing
		defer func() {
			// Kept while a continued restore can still finish it; a new
			// image that failed is removed, and its marker with it.
			if err == nil || !resumed {
				os.Remove(marker)
			}
		}()
	}
	update, finish := progress(stderr, f.progress, "restoring "+name)
	defer finish()
	if existing {
		// A host disk with change tracking says what changed since the
		// point: only those chunks are read and written. It is asked
		// before the disk is opened for writing (a restore by direct
		// lease holds the disk's tracking until it ends).
		var changed []disk.Extent
		if strings.HasPrefix(target, "vdisk:") && pd.ChangeID != "" {
			if rd, _, err := openImage(ctx, target, "", format.OpenOptions{ReadOnly: true}); err == nil {
				changed, _ = changedSincePoint(ctx, rd, pd.ChangeID)
				rd.Close()
			}
		}
		d, _, err := openImage(ctx, target, "", format.OpenOptions{})
		if err != nil {
			return st, err
		}
		defer func() {
			if cerr := d.Close(); err == nil {
				err = cerr
			}
		}()
		if d.Size() < pd.Size {
			return st, disk.Errorf(disk.ErrInvalid, "%s holds %d bytes, the disk %d: grow it first", target, d.Size(), pd.Size)
		}
		if d.Size() > pd.Size {
			fmt.Fprintf(stderr, "vdisk restore: note: %s is %s larger than the disk; its bytes from %d on are left as they were\n", target, humanSize(d.Size()-pd.Size), pd.Size)
		}
		ro := backup.RestoreOptions{Existing: true, Concurrency: f.jobs, Progress: update, Changed: changed}
		return repo.Restore(ctx, p, name, d, ro)
	}
	fmtName, err := checkFormat(f.format)
	if err != nil {
		return st, err
	}
	opts, _ := parseOptions(f.options)
	var co format.CreateOptions
	if co.FS, err = cacheFS(f.cache); err != nil {
		return st, err
	}
	if fmtName == format.VMDK {
		if co.VMDK, err = vmdkOptions(opts); err != nil {
			return st, err
		}
	} else if len(opts) > 0 {
		return st, usagef("raw images take no options")
	}
	out, err := format.Create(ctx, target, fmtName, pd.Size, &co)
	if err != nil {
		return st, err
	}
	made := imageFiles(out, target)
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			removeFiles(made)
		}
	}()
	if fmtName == format.VMDK && co.VMDK.Subformat == vmdk.StreamOptimized {
		// A stream is written in order: copy from the point as a disk.
		start := time.Now()
		src, err := repo.OpenDisk(ctx, p, name)
		if err != nil {
			return st, err
		}
		defer src.Close()
		cs, err := disk.Copy(ctx, out, src, &disk.CopyOptions{DstZeroed: true, Sequential: true, Progress: update})
		return backup.RestoreStats{Total: pd.Size, Written: cs.Written, Duration: time.Since(start)}, err
	}
	// The new image is being filled: write it behind, so that the flush
	// at the end finds the data mostly on the device (disk.WriteBehind).
	if wb, ok := out.(disk.WriteBehinder); ok {
		wb.SetWriteBehind(true)
	}
	return repo.Restore(ctx, p, name, out, backup.RestoreOptions{Concurrency: f.jobs, Progress: update})
}

// restoreVM recreates a VM point on the host: a new VM of that name with a
// disk at each key the point holds (capacity, adapter and change tracking
// as the VM's configuration recorded them), each restored from the point.
func restoreVM(ctx context.Context, repo *backup.Repository, p *backup.Point, name string, jobs int, showProgress bool, stdout, stderr io.Writer) error {
	var cfg hostapi.VMInfo
	if len(p.Config) == 0 || json.Unmarshal(p.Config, &cfg) != nil || len(cfg.Disks) == 0 {
		return disk.Errorf(disk.ErrInvalid, "point %s is not of a host VM (it holds no VM configuration): restore its disks one by one", short(p.ID))
	}
	hc, err := (&hostFlags{output: "human", timeout: time.Minute}).client()
	if err != nil {
		return err
	}
	defer hc.Close()
	if err := hc.Do(ctx, "POST", "/api/v1/vms", map[string]string{"name": name}, nil); err != nil {
		return fmt.Errorf("create VM %s: %w", name, err)
	}
	c, err := hostConn(ctx, "vdisk:vm/"+name)
	if err != nil {
		return err
	}
	defer c.Close()
	for _, d := range cfg.Disks {
		pd := p.Disk(d.Key)
		if pd == nil {
			return disk.Errorf(disk.ErrCorrupt, "point %s: the VM configuration names disk %s, the point does not hold it", short(p.ID), d.Key)
		}
		spec := vdisk.Spec{VM: name, Key: d.Key}
		if err := c.Create(ctx, spec, vdisk.CreateParams{Capacity: pd.Size, Adapter: d.Adapter, CBT: d.CBT, CBTBlockSize: d.CBTBlockSize}); err != nil {
			return fmt.Errorf("create disk %s of VM %s: %w", d.Key, name, err)
		}
		h, err := c.Open(ctx, spec, 0)
		if err != nil {
			return err
		}
		update, finish := progress(stderr, showProgress, "restoring "+d.Key)
		st, err := repo.Restore(ctx, p, d.Key, h, backup.RestoreOptions{Concurrency: jobs, Progress: update})
		finish()
		if cerr := h.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("restore %s of VM %s: %w", d.Key, name, err)
		}
		fmt.Fprintf(stdout, "restored %s/%s into VM %s: wrote %s in %s\n", short(p.ID), d.Key, name, humanSize(st.Written), st.Duration.Round(time.Millisecond))
	}
	return nil
}

// changedSincePoint asks a host disk for the areas changed since the
// change ID a point recorded of it. It reports false when the target is
// no host disk, has no change tracking, or does not know the change ID
// (another disk, or tracking reset): the restore then compares every
// chunk by hash.
func changedSincePoint(ctx context.Context, d disk.Disk, changeID string) ([]disk.Extent, bool) {
	h, ok := d.(hostHandle)
	if !ok || changeID == "" {
		return nil, false
	}
	ch := []disk.Extent{}
	_, err := h.Handle.ChangedAreas(ctx, changeID, 0, func(a vdisk.Area) error {
		ch = append(ch, disk.Extent{Off: a.Start, Len: a.Length})
		return nil
	})
	if err != nil {
		return nil, false
	}
	return ch, true
}
