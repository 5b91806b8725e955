package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/vdisk-project/vdisk/backup"
	"github.com/vdisk-project/vdisk/backup/storage"
	"github.com/vdisk-project/vdisk/backup/storage/location"
	"github.com/vdisk-project/vdisk/disk"
)

// repoFlags are the flags every repository command takes.
type repoFlags struct {
	repo       string
	pwFile     string
	s3Endpoint string
}

func (r *repoFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&r.repo, "repo", "", "the repository: a directory or s3://BUCKET[/PREFIX] (default $VDISK_REPO)")
	fs.StringVar(&r.pwFile, "password-file", "", "file holding the repository password (else $VDISK_REPO_PASSWORD, else a prompt)")
	fs.StringVar(&r.s3Endpoint, "s3-endpoint", "", "S3 endpoint URL (default $AWS_ENDPOINT_URL, else AWS)")
}

func (r *repoFlags) location() (string, error) {
	loc := r.repo
	if loc == "" {
		loc = os.Getenv("VDISK_REPO")
	}
	if loc == "" {
		return "", usagef("no repository: use --repo or $VDISK_REPO")
	}
	return loc, nil
}

// openStorage opens (or, with create, makes) the repository's storage: a
// directory or an S3 location, with retries of transient failures.
func openStorage(ctx context.Context, loc, endpoint string, create bool) (storage.Storage, error) {
	o := location.Options{Endpoint: endpoint, CAFile: os.Getenv("VDISK_S3_CA_FILE"), CreateBucket: true}
	if create {
		return location.Create(ctx, loc, o)
	}
	return location.Open(ctx, loc, o)
}

// password reads the repository password ($VDISK_REPO_PASSWORD_FILE names
// a file as --password-file does).
func (r *repoFlags) password(stderr io.Writer) ([]byte, error) {
	f := r.pwFile
	if f == "" {
		f = os.Getenv("VDISK_REPO_PASSWORD_FILE")
	}
	pw, err := readPassword(f, "VDISK_REPO_PASSWORD", "repository password: ", stderr)
	if err != nil {
		return nil, err
	}
	if pw == "" {
		return nil, usagef("the repository password is empty")
	}
	return []byte(pw), nil
}

// open opens the repository the flags name.
func (r *repoFlags) open(ctx context.Context, stderr io.Writer) (*backup.Repository, error) {
	loc, err := r.location()
	if err != nil {
		return nil, err
	}
	st, err := openStorage(ctx, loc, r.s3Endpoint, false)
	if err != nil {
		return nil, err
	}
	var pw []byte
	if encrypted, err := repoEncrypted(ctx, st); err != nil {
		st.Close()
		return nil, err
	} else if encrypted {
		if pw, err = r.password(stderr); err != nil {
			st.Close()
			return nil, err
		}
	}
	repo, err := backup.Open(ctx, st, pw)
	if err != nil {
		st.Close()
		return nil, err
	}
	return repo, nil
}

func cmdRepo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("repo takes a subcommand: init, rebuild-index, key")
	}
	switch args[0] {
	case "init":
		return cmdRepoInit(ctx, args[1:], stdout, stderr)
	case "rebuild-index":
		return cmdRepoRebuild(ctx, args[1:], stdout, stderr)
	case "key":
		return cmdRepoKey(ctx, args[1:], stdout, stderr)
	case "-h", "--help":
		return &helpError{}
	}
	return usagef("unknown repo subcommand %q (init, rebuild-index, key)", args[0])
}

func cmdRepoInit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("repo init", flag.ContinueOnError)
	var rf repoFlags
	rf.register(fs)
	chunk := fs.String("chunk-size", "4M", "chunk size, a power of two from 64K to 64M")
	pack := fs.String("pack-size", "16M", "size packs of chunks are filled to")
	unencrypted := fs.Bool("unencrypted", false, "store chunks without encryption (chunk IDs are then plain SHA-256)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return usagef("repo init takes one repository")
	}
	if len(pos) == 1 {
		rf.repo = pos[0]
	}
	loc, err := rf.location()
	if err != nil {
		return err
	}
	cs, err := parseSize(*chunk)
	if err != nil {
		return err
	}
	ps, err := parseSize(*pack)
	if err != nil {
		return err
	}
	opts := backup.InitOptions{ChunkSize: int(cs), PackSize: int(ps), Unencrypted: *unencrypted}
	if !*unencrypted {
		if opts.Password, err = rf.password(stderr); err != nil {
			return err
		}
	}
	st, err := openStorage(ctx, loc, rf.s3Endpoint, true)
	if err != nil {
		return err
	}
	repo, err := backup.Init(ctx, st, opts)
	if err != nil {
		st.Close()
		return err
	}
	defer repo.Close()
	enc := "encrypted (AES-256-GCM, keyed chunk IDs)"
	if !repo.Encrypted() {
		enc = "NOT encrypted"
	}
	fmt.Fprintf(stdout, "created repository %s at %s: %s chunks, %s\n", repo.ID(), loc, humanSize(int64(repo.ChunkSize())), enc)
	return nil
}

func cmdRepoRebuild(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("repo rebuild-index", flag.ContinueOnError)
	var rf repoFlags
	rf.register(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("repo rebuild-index takes no arguments")
	}
	repo, err := rf.open(ctx, stderr)
	if err != nil {
		return err
	}
	defer repo.Close()
	rep, err := repo.RebuildIndex(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%+v\n", *rep)
	return nil
}

// repoEncrypted reads the repository's plain config object to learn
// whether a password is needed (an unencrypted repository asks for none).
func repoEncrypted(ctx context.Context, st storage.Storage) (bool, error) {
	b, err := st.Get(ctx, "config", 64<<10)
	if err != nil {
		if errors.Is(err, disk.ErrNotFound) {
			return false, disk.Errorf(disk.ErrNotFound, "no backup repository here (run 'vdisk repo init')")
		}
		return false, err
	}
	var c struct {
		Encryption string `json:"encryption"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return false, disk.Errorf(disk.ErrCorrupt, "backup: the repository's config object is damaged: %v", err)
	}
	return c.Encryption != "none", nil
}
