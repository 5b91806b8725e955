package s3_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vdisk-project/vdisk/backup/storage"
	"github.com/vdisk-project/vdisk/backup/storage/retry"
	"github.com/vdisk-project/vdisk/backup/storage/s3"
	"github.com/vdisk-project/vdisk/backup/storage/storagetest"
	"github.com/vdisk-project/vdisk/disk"
	"github.com/vdisk-project/vdisk/internal/testenv"
)

func config(srv *storagetest.Server, bucket, prefix string) s3.Config {
	return s3.Config{
		Bucket:    bucket,
		Prefix:    prefix,
		Endpoint:  srv.Endpoint,
		AccessKey: srv.AccessKey,
		SecretKey: srv.SecretKey,
		Region:    "us-east-1",
		// Small parts, so that the suite's 32 MiB object goes as a
		// multipart upload.
		PartSize: s3.MinPartSize,
	}
}

func open(t *testing.T, cfg s3.Config) *s3.Storage {
	t.Helper()
	st, err := s3.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func newBucket(t *testing.T, srv *storagetest.Server, bucket string) {
	t.Helper()
	if err := s3.CreateBucket(context.Background(), config(srv, bucket, "")); err != nil {
		t.Fatalf("CreateBucket(%s): %v", bucket, err)
	}
}

func TestConformance(t *testing.T) {
	srv := storagetest.Versitygw(t)
	newBucket(t, srv, "conformance")
	n := 0
	storagetest.RunTests(t, func(t *testing.T) storage.Storage {
		n++
		return open(t, config(srv, "conformance", fmt.Sprintf("run/%d", n)))
	})
	// Without a prefix, one bucket per store.
	t.Run("NoPrefix", func(t *testing.T) {
		storagetest.RunTests(t, func(t *testing.T) storage.Storage {
			n++
			b := fmt.Sprintf("bare-%d", n)
			newBucket(t, srv, b)
			return open(t, config(srv, b, ""))
		})
	})
}

func TestPrefixIsolation(t *testing.T) {
	srv := storagetest.Versitygw(t)
	newBucket(t, srv, "iso")
	ctx := context.Background()
	a := open(t, config(srv, "iso", "repo/a"))
	b := open(t, config(srv, "iso", "repo/ab"))
	bare := open(t, config(srv, "iso", ""))
	if err := a.Put(ctx, "x", []byte("a")); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, "x", []byte("b")); err != nil {
		t.Fatal(err)
	}
	if got, err := a.Get(ctx, "x", 10); err != nil || string(got) != "a" {
		t.Errorf("a.Get(x) = %q, %v", got, err)
	}
	var names []string
	if err := a.List(ctx, "", func(in storage.Info) error { names = append(names, in.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(names) != "[x]" {
		t.Errorf("a.List = %q, want [x]: another prefix leaked in", names)
	}
	if got, err := bare.Get(ctx, "repo/ab/x", 10); err != nil || string(got) != "b" {
		t.Errorf("the key of b's x is not repo/ab/x: %q, %v", got, err)
	}
}

func TestWrongCredentials(t *testing.T) {
	srv := storagetest.Versitygw(t)
	newBucket(t, srv, "creds")
	ctx := context.Background()
	good := open(t, config(srv, "creds", ""))
	if err := good.Put(ctx, "x", []byte("x")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, key, secret string }{
		{"bad secret", srv.AccessKey, "not-the-secret"},
		{"unknown key", "nosuchkey", srv.SecretKey},
		{"anonymous", "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := config(srv, "creds", "")
			cfg.AccessKey, cfg.SecretKey = c.key, c.secret
			_, err := s3.Open(ctx, cfg)
			if !errors.Is(err, disk.ErrPermission) || storage.IsTransient(err) {
				t.Fatalf("Open: error %v, want disk.ErrPermission, not transient", err)
			}
			if !strings.Contains(err.Error(), "AWS_ACCESS_KEY_ID") {
				t.Errorf("error %q does not say what to check", err)
			}
		})
	}
}

func TestMissingBucket(t *testing.T) {
	srv := storagetest.Versitygw(t)
	ctx := context.Background()
	_, err := s3.Open(ctx, config(srv, "no-such-bucket", ""))
	if !errors.Is(err, disk.ErrNotFound) || !strings.Contains(err.Error(), `"no-such-bucket"`) {
		t.Fatalf("Open of a missing bucket: error %v, want disk.ErrNotFound naming the bucket", err)
	}
	// CreateBucket makes it, and is idempotent.
	newBucket(t, srv, "no-such-bucket")
	newBucket(t, srv, "no-such-bucket")
	st := open(t, config(srv, "no-such-bucket", ""))
	if err := st.Put(ctx, "x", nil); err != nil {
		t.Fatal(err)
	}
}

func TestRangedReadPastEnd(t *testing.T) {
	srv := storagetest.Versitygw(t)
	newBucket(t, srv, "ranges")
	st := open(t, config(srv, "ranges", "p"))
	ctx := context.Background()
	data := storagetest.Data(1, 1000)
	if err := st.Put(ctx, "obj", data); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		off  int64
		n    int
		want int
	}{{990, 20, 10}, {1000, 1, 0}, {5000, 10, 0}, {0, 2000, 1000}} {
		p := make([]byte, c.n)
		n, err := st.ReadAt(ctx, "obj", p, c.off)
		if n != c.want || !errors.Is(err, io.ErrUnexpectedEOF) || storage.IsTransient(err) {
			t.Errorf("ReadAt(%d bytes @%d) of 1000 = %d, %v; want %d, io.ErrUnexpectedEOF not transient", c.n, c.off, n, err, c.want)
		}
		if !bytes.Equal(p[:n], data[min(c.off, 1000):min(c.off, 1000)+int64(n)]) {
			t.Errorf("ReadAt(%d bytes @%d) returned other data", c.n, c.off)
		}
	}
}

// TestServerRestart stops the server in the middle of a run of Puts and
// starts it again: without retries a call fails with a transient
// disk.ErrAccess; with them it rides the outage out.
func TestServerRestart(t *testing.T) {
	srv := storagetest.Versitygw(t)
	newBucket(t, srv, "restart")
	cfg := config(srv, "restart", "")
	cfg.MaxRetries = 1
	bare := open(t, cfg)
	ctx := context.Background()
	if err := bare.Put(ctx, "before", []byte("before")); err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	err := bare.Put(ctx, "down", []byte("down"))
	if !errors.Is(err, disk.ErrAccess) || !storage.IsTransient(err) {
		t.Fatalf("Put with the server down: error %v, want a transient disk.ErrAccess", err)
	}
	_, err = bare.Get(ctx, "before", 100)
	if !errors.Is(err, disk.ErrAccess) || !storage.IsTransient(err) {
		t.Fatalf("Get with the server down: error %v, want a transient disk.ErrAccess", err)
	}

	var retried atomic.Int64
	st := retry.New(bare, retry.Options{Attempts: 40, Base: 50 * time.Millisecond, Max: 250 * time.Millisecond,
		OnRetry: func(op, name string, attempt int, err error, wait time.Duration) {
			if retried.Add(1) == 3 {
				// The outage lasts a few retries.
				go srv.Start()
			}
		}})
	for i := range 5 {
		if err := st.Put(ctx, fmt.Sprintf("during/%d", i), []byte("x")); err != nil {
			t.Fatalf("Put %d through the restart: %v (after %d retries)", i, err, st.Retries())
		}
	}
	if st.Retries() < 3 {
		t.Errorf("Retries = %d, want at least 3", st.Retries())
	}
	if b, err := st.Get(ctx, "before", 100); err != nil || string(b) != "before" {
		t.Errorf("Get(before) after the restart = %q, %v", b, err)
	}
}

// TestFaults answers with the errors of a misbehaving server.
func TestFaults(t *testing.T) {
	var status atomic.Int64
	var body atomic.Value
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code := int(status.Load())
		switch {
		case code == 0:
			// A range ignored: the whole object from offset 0.
			w.Header().Set("Content-Length", "10")
			w.Header().Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
			w.Write([]byte("0123456789"))
		case code == 1:
			// A body cut short of its Content-Length.
			w.Header().Set("Content-Length", "1000")
			w.Header().Set("Content-Range", "bytes 0-999/5000")
			w.Header().Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
			w.WriteHeader(http.StatusPartialContent)
			w.Write([]byte("short"))
		case code == 2:
			// A huge object, refused before its body is read.
			w.Header().Set("Content-Length", "1099511627776")
			w.Header().Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
			w.WriteHeader(http.StatusOK)
		default:
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(code)
			fmt.Fprint(w, body.Load().(string))
		}
	}))
	defer ts.Close()
	cfg := s3.Config{Bucket: "bucket", Endpoint: ts.URL, AccessKey: "k", SecretKey: "s", Region: "us-east-1", MaxRetries: 1, Lookup: s3.LookupPath}
	st, err := s3.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()

	status.Store(0)
	if _, err := st.ReadAt(ctx, "x", make([]byte, 4), 3); !errors.Is(err, disk.ErrAccess) || errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("ReadAt from a server ignoring Range: error %v, want disk.ErrAccess", err)
	}
	status.Store(1)
	n, err := st.ReadAt(ctx, "x", make([]byte, 1000), 0)
	if !errors.Is(err, disk.ErrAccess) || !storage.IsTransient(err) || errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("ReadAt with a body cut short: %d, %v; want a transient disk.ErrAccess, not io.ErrUnexpectedEOF", n, err)
	}
	status.Store(2)
	if _, err := st.Get(ctx, "x", 1<<20); !errors.Is(err, disk.ErrOutOfMemory) {
		t.Errorf("Get of a 1 TiB object, max 1 MiB: error %v, want disk.ErrOutOfMemory", err)
	}
	for _, c := range []struct {
		status    int
		code      string
		want      disk.Code
		transient bool
	}{
		{503, "SlowDown", disk.ErrAccess, true},
		{500, "InternalError", disk.ErrAccess, true},
		{400, "RequestTimeout", disk.ErrAccess, true},
		{403, "AccessDenied", disk.ErrPermission, false},
		{403, "SignatureDoesNotMatch", disk.ErrPermission, false},
		{403, "InvalidAccessKeyId", disk.ErrPermission, false},
		{404, "NoSuchKey", disk.ErrNotFound, false},
		{404, "NoSuchBucket", disk.ErrNotFound, false},
		{400, "InvalidArgument", disk.ErrInvalid, false},
	} {
		status.Store(int64(c.status))
		body.Store(fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>test</Message></Error>`, c.code))
		_, err := st.Get(ctx, "x", 100)
		if disk.CodeOf(err) != c.want || storage.IsTransient(err) != c.transient {
			t.Errorf("Get answered %d %s: error %v (code %v, transient %v), want code %v, transient %v",
				c.status, c.code, err, disk.CodeOf(err), storage.IsTransient(err), c.want, c.transient)
		}
		if c.code == "NoSuchBucket" && !strings.Contains(err.Error(), `"bucket"`) {
			t.Errorf("NoSuchBucket error %q does not name the bucket", err)
		}
	}
	// A TLS server whose certificate is not trusted: not transient.
	tlsSrv := httptest.NewTLSServer(http.NotFoundHandler())
	defer tlsSrv.Close()
	cfg.Endpoint = tlsSrv.URL
	_, err = s3.Open(ctx, cfg)
	if !errors.Is(err, disk.ErrAccess) || storage.IsTransient(err) || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Open of an untrusted TLS server: error %v, want a non-transient disk.ErrAccess about the certificate", err)
	}
}

func TestConfigFromEnv(t *testing.T) {
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
		"AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_ACCESS_KEY_ID", "AKID")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "SECRET")
	t.Setenv("AWS_SESSION_TOKEN", "TOKEN")
	t.Setenv("AWS_DEFAULT_REGION", "eu-west-1")
	t.Setenv("AWS_ENDPOINT_URL", "https://s3.example.com")
	c, err := s3.ConfigFromEnv("s3://my-bucket/backups/vm1/", "")
	if err != nil {
		t.Fatal(err)
	}
	want := s3.Config{Bucket: "my-bucket", Prefix: "backups/vm1", Endpoint: "https://s3.example.com",
		Region: "eu-west-1", AccessKey: "AKID", SecretKey: "SECRET", SessionToken: "TOKEN"}
	if c != want {
		t.Errorf("ConfigFromEnv = %+v, want %+v", c, want)
	}
	t.Setenv("AWS_ENDPOINT_URL_S3", "https://s3only.example.com")
	if c, _ := s3.ConfigFromEnv("s3://b12", ""); c.Endpoint != "https://s3only.example.com" || c.Prefix != "" {
		t.Errorf("with AWS_ENDPOINT_URL_S3: %+v", c)
	}
	if c, _ := s3.ConfigFromEnv("s3://b12", "http://127.0.0.1:9000"); c.Endpoint != "http://127.0.0.1:9000" {
		t.Errorf("the flag does not override the environment: %+v", c)
	}

	// The shared credentials file, for a profile.
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_SESSION_TOKEN", "")
	file := filepath.Join(t.TempDir(), "credentials")
	if err := os.WriteFile(file, []byte("[default]\naws_access_key_id = DEF\naws_secret_access_key = DEFS\n[backup]\naws_access_key_id = FILEKEY\naws_secret_access_key = FILESECRET\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", file)
	t.Setenv("AWS_PROFILE", "backup")
	if c, err := s3.ConfigFromEnv("s3://b12", ""); err != nil || c.AccessKey != "FILEKEY" || c.SecretKey != "FILESECRET" {
		t.Errorf("from the shared credentials file: %+v, %v", c, err)
	}
	t.Setenv("AWS_PROFILE", "missing")
	if _, err := s3.ConfigFromEnv("s3://b12", ""); !errors.Is(err, disk.ErrPermission) {
		t.Errorf("missing profile: error %v, want disk.ErrPermission", err)
	}
	t.Setenv("AWS_PROFILE", "")

	for _, bad := range []string{"s3://", "s3://UPPER", "s3://ab", "/local/path", "s3://bucket/../x", "s3://bucket/a b"} {
		if _, err := s3.ConfigFromEnv(bad, ""); !errors.Is(err, disk.ErrInvalid) {
			t.Errorf("ConfigFromEnv(%q): error %v, want disk.ErrInvalid", bad, err)
		}
	}
	for _, ep := range []string{"http://s3.example.com", "ftp://x", "https://host/path"} {
		if _, err := s3.ConfigFromEnv("s3://bucket", ep); !errors.Is(err, disk.ErrInvalid) {
			t.Errorf("endpoint %q: error %v, want disk.ErrInvalid", ep, err)
		}
	}
	for _, ep := range []string{"http://localhost:9000", "http://[::1]:9000", "https://s3.example.com:8443", "s3.example.com"} {
		if _, err := s3.ConfigFromEnv("s3://bucket", ep); err != nil {
			t.Errorf("endpoint %q: %v", ep, err)
		}
	}
}

// TestMinIOErasure runs against a 4-drive MinIO erasure set and removes
// one drive's directory in the middle: reads and writes go on.
func TestMinIOErasure(t *testing.T) {
	testenv.Long(t)
	srv := storagetest.MinIO(t, 4)
	if err := s3.CreateBucket(context.Background(), config(srv, "erasure", "")); err != nil {
		t.Fatal(err)
	}
	st := retry.New(open(t, config(srv, "erasure", "repo")), retry.Options{Base: 100 * time.Millisecond})
	ctx := context.Background()
	const objects = 40
	put := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if err := st.Put(ctx, fmt.Sprintf("data/%02d", i), storagetest.Data(uint64(i), 1<<20+i)); err != nil {
				t.Fatalf("Put %d: %v", i, err)
			}
		}
	}
	verify := func(to int) {
		t.Helper()
		for i := range to {
			b, err := st.Get(ctx, fmt.Sprintf("data/%02d", i), 2<<20)
			if err != nil || !bytes.Equal(b, storagetest.Data(uint64(i), 1<<20+i)) {
				t.Fatalf("Get %d: %d bytes, %v", i, len(b), err)
			}
		}
	}
	put(0, objects/2)
	if err := os.RemoveAll(srv.Drives[1]); err != nil {
		t.Fatal(err)
	}
	verify(objects / 2)
	put(objects/2, objects)
	verify(objects)
	n := 0
	if err := st.List(ctx, "data/", func(storage.Info) error { n++; return nil }); err != nil || n != objects {
		t.Fatalf("List = %d objects, %v; want %d", n, err, objects)
	}
	storagetest.RunTests(t, func(t *testing.T) storage.Storage {
		n++
		return open(t, config(srv, "erasure", fmt.Sprintf("suite/%d", n)))
	})
}

// TestHungServer: a server that never answers is left when the caller's
// context ends, with the context's error, not a transient one.
func TestHungServer(t *testing.T) {
	release := make(chan struct{})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead || r.URL.Query().Has("location") {
			return // let Open through
		}
		<-release
	}))
	defer ts.Close()
	defer close(release)
	st, err := s3.Open(context.Background(), s3.Config{Bucket: "bucket", Endpoint: ts.URL, AccessKey: "k", SecretKey: "s",
		Region: "us-east-1", Lookup: s3.LookupPath})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = st.ReadAt(ctx, "x", make([]byte, 10), 0)
	if !errors.Is(err, context.DeadlineExceeded) || storage.IsTransient(err) {
		t.Errorf("ReadAt from a hung server: error %v, want context.DeadlineExceeded, not transient", err)
	}
}

func benchStorage(b *testing.B) *s3.Storage {
	srv := storagetest.Versitygw(b)
	cfg := s3.Config{Bucket: "bench", Endpoint: srv.Endpoint, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Region: "us-east-1"}
	if err := s3.CreateBucket(context.Background(), cfg); err != nil {
		b.Fatal(err)
	}
	st, err := s3.Open(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}

func BenchmarkPut(b *testing.B) {
	st := benchStorage(b)
	for _, size := range []int{1 << 20, 16 << 20} {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			data := storagetest.Data(1, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if err := st.Put(context.Background(), fmt.Sprintf("data/%d", i), data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkReadAt(b *testing.B) {
	st := benchStorage(b)
	const size = 16 << 20
	if err := st.Put(context.Background(), "pack", storagetest.Data(1, size)); err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{64 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("%dKiB", n>>10), func(b *testing.B) {
			p := make([]byte, n)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if _, err := st.ReadAt(context.Background(), "pack", p, int64(i*n)%(size-int64(n))); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// cutProxy forwards TCP connections to a server; while cuts is positive,
// each new connection is closed after limit bytes of the server's answer
// (or, with up, of the client's request).
type cutProxy struct {
	l      net.Listener
	target string
	cuts   atomic.Int64
	limit  int64
	up     atomic.Bool
}

func newCutProxy(t *testing.T, target string, limit int64) *cutProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{l: l, target: target, limit: limit}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { p.serve(c) })
		}
	})
	return p
}

func (p *cutProxy) serve(c net.Conn) {
	defer c.Close()
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer s.Close()
	var down, up io.Reader = s, c
	if p.cuts.Add(-1) >= 0 {
		if p.up.Load() {
			up = io.LimitReader(c, p.limit)
		} else {
			down = io.LimitReader(s, p.limit)
		}
	}
	go func() {
		io.Copy(s, up)
		s.Close()
		c.Close()
	}()
	io.Copy(c, down)
}

// TestBodyCut cuts a GET's answer in the middle of its body: without
// retries a transient disk.ErrAccess (and not io.ErrUnexpectedEOF), with
// them the whole object.
func TestBodyCut(t *testing.T) {
	srv := storagetest.Versitygw(t)
	newBucket(t, srv, "cut")
	ctx := context.Background()
	data := storagetest.Data(9, 4<<20)
	if err := open(t, config(srv, "cut", "")).Put(ctx, "obj", data); err != nil {
		t.Fatal(err)
	}
	p := newCutProxy(t, strings.TrimPrefix(srv.Endpoint, "http://"), 256<<10)
	cfg := config(srv, "cut", "")
	cfg.Endpoint = "http://" + p.l.Addr().String()
	cfg.MaxRetries = 1
	// A connection per request, so that each cut hits the next one.
	cfg.Transport = &http.Transport{DisableKeepAlives: true}
	bare := open(t, cfg)

	p.cuts.Store(1)
	_, err := bare.Get(ctx, "obj", 8<<20)
	if !errors.Is(err, disk.ErrAccess) || !storage.IsTransient(err) || errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Get with the body cut: error %v, want a transient disk.ErrAccess, not io.ErrUnexpectedEOF", err)
	}
	p.cuts.Store(1)
	if _, err := bare.ReadAt(ctx, "obj", make([]byte, 1<<20), 4096); !errors.Is(err, disk.ErrAccess) || !storage.IsTransient(err) || errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("ReadAt with the body cut: error %v, want a transient disk.ErrAccess, not io.ErrUnexpectedEOF", err)
	}

	st := retry.New(bare, retry.Options{Base: time.Millisecond})
	p.cuts.Store(2)
	b, err := st.Get(ctx, "obj", 8<<20)
	if err != nil || !bytes.Equal(b, data) {
		t.Fatalf("Get through retry with two cut answers: %d bytes, %v", len(b), err)
	}
	if st.Retries() != 2 {
		t.Errorf("Retries = %d, want 2", st.Retries())
	}
}

// TestPutCut cuts a PUT's request body in the middle: the object does not
// appear, in part or at all, and the error is transient.
func TestPutCut(t *testing.T) {
	srv := storagetest.Versitygw(t)
	newBucket(t, srv, "putcut")
	ctx := context.Background()
	p := newCutProxy(t, strings.TrimPrefix(srv.Endpoint, "http://"), 1<<20)
	p.up.Store(true)
	cfg := config(srv, "putcut", "")
	cfg.Endpoint = "http://" + p.l.Addr().String()
	cfg.MaxRetries = 1
	cfg.Transport = &http.Transport{DisableKeepAlives: true}
	bare := open(t, cfg)
	for _, size := range []int{4 << 20, 12 << 20} { // one PUT; a multipart upload
		name := fmt.Sprintf("obj%d", size)
		p.cuts.Store(100) // every request in the upload
		err := bare.Put(ctx, name, storagetest.Data(uint64(size), size))
		p.cuts.Store(0)
		if !errors.Is(err, disk.ErrAccess) || !storage.IsTransient(err) {
			t.Errorf("Put of %d bytes with the upload cut: error %v, want a transient disk.ErrAccess", size, err)
		}
		if _, err := bare.Stat(ctx, name); !errors.Is(err, disk.ErrNotFound) {
			t.Errorf("Stat after a cut Put of %d bytes: error %v, want disk.ErrNotFound", size, err)
		}
	}
}
