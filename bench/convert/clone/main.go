// Command clone copies a local image into a new one with the kit's Clone
// (VixDiskLib_Clone), for bench/convert/durable.sh:
//
//	clone SRC DST TYPE
//
// TYPE is a VMDK create type or "raw". The new image is durable when clone
// returns, as Clone promises.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/vdisk-project/vdisk"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: clone SRC DST TYPE")
		os.Exit(64)
	}
	ctx := context.Background()
	c, err := vdisk.Connect(ctx, vdisk.ConnectParams{})
	if err == nil {
		_, err = vdisk.Clone(ctx, c, vdisk.Spec{Path: os.Args[2]}, c, vdisk.Spec{Path: os.Args[1]},
			&vdisk.CloneOptions{Create: vdisk.CreateParams{Type: os.Args[3]}})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "clone:", err)
		os.Exit(1)
	}
}
