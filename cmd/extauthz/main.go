// Command extauthz is an Envoy external-authorization server that injects
// OAuth 2.0 client-credentials tokens. This file only wires: it turns the
// command line into a call of one command and the command's error into an
// exit status.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/extauthz/extauthz/internal/gctune"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and failed
	exitUsage   = 2 // the command line, an expression or an input is wrong
)

// usageError marks an error caused by what the user gave the command.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// stdio is where a command reads and writes, so tests can give their own.
type stdio struct {
	in       io.Reader
	out, err io.Writer
}

func main() {
	// Unless GOGC is set: the GC's headroom is a fifth of the live heap,
	// at least 4 MiB and what lets the heap reach 16 MiB (internal/gctune),
	// not Go's 100%.
	gctune.Run(context.Background(), os.Getenv)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], stdio{os.Stdin, os.Stdout, os.Stderr})
	stop()
	os.Exit(report(err, os.Stderr))
}

// report prints err, if any, and returns the exit status it calls for.
func report(err error, w io.Writer) int {
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, new(usageError)):
		fmt.Fprintln(w, "extauthz:", err)
		return exitUsage
	default:
		fmt.Fprintln(w, "extauthz:", err)
		return exitFailure
	}
}

const usage = `Usage: extauthz <command> [flags]

Commands:
  serve     serve ext_authz v3 over gRPC and HTTP until SIGTERM:
            extauthz serve --config FILE
  validate  check a configuration and print every problem in it:
            extauthz validate --config FILE
  claims    evaluate a claims expression against JSON claims:
            extauthz claims --expr EXPR [--claims FILE|-]
  migrate   turn Traefik Middleware manifests (oAuthClientCredentials) into extauthz
            policies and the forwardAuth Middlewares that replace them:
            extauthz migrate [--address URL] [--values] FILE...
  version   print the version
  help      print this help

Run "extauthz <command> -h" for a command's flags.
`

// run runs the command named by args[0].
func run(ctx context.Context, args []string, std stdio) error {
	if len(args) == 0 {
		fmt.Fprint(std.err, usage)
		return usagef("no command given")
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		return runServe(ctx, rest, std)
	case "validate":
		return runValidate(ctx, rest, std)
	case "claims":
		return runClaims(ctx, rest, std)
	case "migrate":
		return runMigrate(ctx, rest, std)
	case "version":
		if len(rest) > 0 {
			return usagef("version takes no arguments")
		}
		fmt.Fprintf(std.out, "extauthz %s %s %s/%s\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(std.out, usage)
		return nil
	default:
		fmt.Fprint(std.err, usage)
		return usagef("unknown command %q", cmd)
	}
}

// newFlagSet returns a flag set that reports errors instead of exiting.
func newFlagSet(name, synopsis string, std stdio) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(std.err)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: extauthz %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and refuses positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usagef("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	return nil
}
