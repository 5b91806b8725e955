package main

import (
	"os"
	"runtime/pprof"
	"sync"
)

// profile is the CPU profile VDISK_CPUPROFILE asks for, as the vdisk
// command writes one: it runs from InitEx to Exit (a program that never
// calls Exit leaves an empty file; an InitEx after Exit starts a new
// profile in the same file).
var profile struct {
	sync.Mutex
	f *os.File
}

// startProfile starts the CPU profile when VDISK_CPUPROFILE names a file
// and none runs yet.
func startProfile() {
	p := os.Getenv("VDISK_CPUPROFILE")
	if p == "" {
		return
	}
	profile.Lock()
	defer profile.Unlock()
	if profile.f != nil {
		return
	}
	f, err := os.Create(p)
	if err != nil {
		logger.Warn("VDISK_CPUPROFILE", "err", err.Error())
		return
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		logger.Warn("VDISK_CPUPROFILE", "err", err.Error())
		f.Close()
		return
	}
	profile.f = f
}

// stopProfile ends the CPU profile, if one runs.
func stopProfile() {
	profile.Lock()
	defer profile.Unlock()
	if profile.f == nil {
		return
	}
	pprof.StopCPUProfile()
	profile.f.Close()
	profile.f = nil
}
