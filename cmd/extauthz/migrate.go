package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/extauthz/extauthz/pkg/traefik"
)

// maxMigrateInput bounds one manifest file.
const maxMigrateInput = 16 << 20

// runMigrate turns Traefik Middleware manifests into extauthz policies and
// the forwardAuth Middlewares that replace them.
func runMigrate(_ context.Context, args []string, std stdio) error {
	fs := newFlagSet("migrate", "migrate [--address URL] [--values] FILE... (- for standard input)", std)
	address := fs.String("address", traefik.DefaultAddress, "extauthz's HTTP mode as Traefik reaches it")
	values := fs.Bool("values", false, "write values for the Helm chart instead of a configuration")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() == 0 {
		return usagef("migrate: give the Middleware manifests: extauthz migrate FILE... (- for standard input)")
	}
	var inputs []traefik.Input
	for _, name := range fs.Args() {
		var r io.Reader = std.in
		if name != "-" {
			f, err := os.Open(name)
			if err != nil {
				return usageError{err}
			}
			defer f.Close()
			r = f
		}
		data, err := io.ReadAll(io.LimitReader(r, maxMigrateInput+1))
		if err != nil {
			return err
		}
		if len(data) > maxMigrateInput {
			return usagef("%s: larger than %d MiB", name, maxMigrateInput>>20)
		}
		inputs = append(inputs, traefik.Input{Name: name, Data: data})
	}
	notes, err := traefik.Migrate(inputs, traefik.MigrateOptions{Address: *address, Values: *values}, std.out)
	for _, n := range notes {
		fmt.Fprintln(std.err, "note:", n)
	}
	if err != nil {
		return usageError{err}
	}
	return nil
}
