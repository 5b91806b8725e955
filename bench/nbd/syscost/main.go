// Command syscost measures, on this machine, the CPU a server spends per
// GiB on each step of serving data, to estimate what a zero-copy or a
// kernel-TLS path would save: pread of a file into a buffer, write of a
// buffer to a loopback socket (TCP and Unix) at several sizes, sendfile
// of the file to the socket, and AES-GCM sealing of 16 KiB records. Each
// step runs on one locked OS thread and is charged by that thread's
// rusage (user+sys), so the receiving side, which runs on another thread,
// is not counted; loopback delivery done in the sender's system call is.
//
//	go run ./bench/nbd/syscost -file IMAGE
package main

import (
	"crypto/aes"
	"crypto/cipher"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"time"
)

// threadCPU is the calling thread's user+system time.
func threadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// perGiB runs fn on a locked thread and returns its CPU seconds per GiB
// of n bytes processed.
func perGiB(n int64, fn func() error) float64 {
	done := make(chan float64)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		t0 := threadCPU()
		if err := fn(); err != nil {
			fmt.Fprintln(os.Stderr, "syscost:", err)
			os.Exit(1)
		}
		done <- (threadCPU() - t0).Seconds() * float64(1<<30) / float64(n)
	}()
	return <-done
}

// sink accepts one connection on a loopback listener and discards what it
// reads; dial returns the sending end.
func sink(network string, dir string) (net.Conn, func()) {
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(dir, "syscost.sock")
		os.Remove(addr)
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		panic(err)
	}
	done := make(chan struct{})
	go func() {
		c, err := l.Accept()
		if err != nil {
			panic(err)
		}
		buf := make([]byte, 1<<20)
		for {
			if _, err := c.Read(buf); err != nil {
				break
			}
		}
		c.Close()
		close(done)
	}()
	c, err := net.Dial(network, l.Addr().String())
	if err != nil {
		panic(err)
	}
	return c, func() { c.Close(); <-done; l.Close() }
}

func main() {
	file := flag.String("file", "", "a file of at least 1 GiB in the page cache (the image served)")
	total := flag.Int64("bytes", 1<<30, "bytes per measurement")
	flag.Parse()
	if *file == "" {
		fmt.Fprintln(os.Stderr, "usage: syscost -file IMAGE")
		os.Exit(2)
	}
	f, err := os.Open(*file)
	if err != nil {
		panic(err)
	}
	fi, _ := f.Stat()
	n := min(*total, fi.Size())
	n -= n % (1 << 20)
	io.Copy(io.Discard, io.NewSectionReader(f, 0, n)) // into the page cache
	dir := os.TempDir()

	fmt.Printf("CPU seconds per GiB, one thread (%s, %d MiB)\n", *file, n>>20)
	for _, sz := range []int{64 << 10, 256 << 10, 1 << 20} {
		buf := make([]byte, sz)
		s := perGiB(n, func() error {
			for off := int64(0); off < n; off += int64(sz) {
				if _, err := f.ReadAt(buf, off); err != nil {
					return err
				}
			}
			return nil
		})
		fmt.Printf("pread %-5s into a buffer          %.3f\n", size(sz), s)
	}
	for _, network := range []string{"tcp", "unix"} {
		for _, sz := range []int{16 << 10, 64 << 10, 256 << 10, 1 << 20} {
			buf := make([]byte, sz)
			c, stop := sink(network, dir)
			s := perGiB(n, func() error {
				for off := int64(0); off < n; off += int64(sz) {
					if _, err := c.Write(buf); err != nil {
						return err
					}
				}
				return nil
			})
			stop()
			fmt.Printf("write %-5s to a %-4s socket        %.3f\n", size(sz), network, s)
		}
		for _, sz := range []int{256 << 10, 1 << 20} {
			c, stop := sink(network, dir)
			rc, _ := c.(syscall.Conn).SyscallConn()
			s := perGiB(n, func() error {
				var serr error
				for off := int64(0); off < n && serr == nil; {
					o := off
					rc.Write(func(fd uintptr) bool {
						var w int
						w, serr = syscall.Sendfile(int(fd), int(f.Fd()), &o, sz)
						if serr == syscall.EAGAIN {
							serr = nil
							return false
						}
						off += int64(w)
						return true
					})
				}
				return serr
			})
			stop()
			fmt.Printf("sendfile %-5s to a %-4s socket     %.3f\n", size(sz), network, s)
		}
	}
	rec := make([]byte, 16<<10)
	out := make([]byte, 0, len(rec)+16)
	nonce := make([]byte, 12)
	for _, kl := range []int{16, 32} {
		b, _ := aes.NewCipher(make([]byte, kl))
		g, _ := cipher.NewGCM(b)
		s := perGiB(n, func() error {
			for off := int64(0); off < n; off += int64(len(rec)) {
				out = g.Seal(out[:0], nonce, rec, nonce[:5])
			}
			return nil
		})
		fmt.Printf("AES-%d-GCM Seal of 16 KiB records   %.3f\n", kl*8, s)
	}
}

func size(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dM", n>>20)
	}
	return fmt.Sprintf("%dK", n>>10)
}
