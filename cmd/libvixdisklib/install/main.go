// Command install builds and installs vdisk's libvixDiskLib into a
// directory laid out like VMware's vmware-vix-disklib-distrib, so that
// VDDK programs find it where they look (nbdkit's libdir=DIR):
//
//	go run ./cmd/libvixdisklib/install DIR
//
// makes
//
//	DIR/lib64/libvixDiskLib-core.so  the library (go build -buildmode=c-shared)
//	DIR/lib64/libvixDiskLib.so.8     its C front (gcc), which loads the core at the first call
//	DIR/lib64/libvixDiskLib.so.7, .so.6, .so   links to libvixDiskLib.so.8
//	DIR/include/vixDiskLib.h, vm_basic_types.h
//
// It needs the Go toolchain and a C compiler ($CC, default gcc). Run it
// from the module (any directory inside it).
package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

func main() {
	if len(os.Args) != 2 || strings.HasPrefix(os.Args[1], "-") {
		fmt.Fprintln(os.Stderr, "usage: go run ./cmd/libvixdisklib/install DIR")
		os.Exit(2)
	}
	if err := install(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "install:", err)
		os.Exit(1)
	}
}

func install(dir string) error {
	src, err := sourceDir()
	if err != nil {
		return err
	}
	lib := filepath.Join(dir, "lib64")
	inc := filepath.Join(dir, "include")
	for _, d := range []string{lib, inc} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	gobin := filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		gobin = "go"
	}
	build := exec.Command(gobin, "build", "-buildmode=c-shared", "-o", filepath.Join(lib, "libvixDiskLib-core.so"), ".")
	build.Dir = src
	if err := run(build); err != nil {
		return err
	}
	os.Remove(filepath.Join(lib, "libvixDiskLib-core.h")) // cgo's header; vixDiskLib.h is the API
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "gcc"
	}
	front := filepath.Join(lib, "libvixDiskLib.so.8")
	if err := run(exec.Command(cc, "-O2", "-fPIC", "-shared", "-pthread", "-I", filepath.Join(src, "include"),
		"-Wl,-soname,libvixDiskLib.so.8", "-o", front, filepath.Join(src, "front", "front.c"), "-ldl")); err != nil {
		return err
	}
	for _, n := range []string{"libvixDiskLib.so.7", "libvixDiskLib.so.6", "libvixDiskLib.so"} {
		p := filepath.Join(lib, n)
		os.Remove(p)
		if err := os.Symlink("libvixDiskLib.so.8", p); err != nil {
			return err
		}
	}
	for _, h := range []string{"vixDiskLib.h", "vm_basic_types.h"} {
		b, err := os.ReadFile(filepath.Join(src, "include", h))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(inc, h), b, 0o644); err != nil {
			return err
		}
	}
	fmt.Println(front)
	return nil
}

// sourceDir finds cmd/libvixdisklib in the module.
func sourceDir() (string, error) {
	out, err := exec.Command("go", "list", "-f", "{{.Dir}}", "github.com/vdisk-project/vdisk/cmd/libvixdisklib").Output()
	if err != nil {
		return "", fmt.Errorf("find cmd/libvixdisklib (run inside the vdisk module): %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

func run(c *exec.Cmd) error {
	c.Stdout, c.Stderr = os.Stderr, os.Stderr
	if err := c.Run(); err != nil {
		return fmt.Errorf("%s: %w", strings.Join(c.Args, " "), err)
	}
	return nil
}
