// Command replog runs a replog node for Kafka clients and administers
// topics, records and groups over Kafka's wire protocol, through franz-go,
// so that every subcommand but serve works against Kafka as well.
//
//	replog serve -dir ./data -kafka 127.0.0.1:9092
//	replog topic create events -partitions 4 -config retention.ms=86400000
//	replog topic list | describe NAME | delete NAME
//	replog produce events < lines.txt
//	replog consume events -from earliest -n 10
//	replog consume events -group g1
//	replog group list | describe G
//	replog bench -records 1000000 -size 100
//
// The client subcommands find the brokers in -brokers (also spelt
// --brokers), else in $REPLOG_BROKERS, else at 127.0.0.1:9092. Exit codes:
// 0 success, 1 failure, 2 bad usage.
//
// Off loopback, serve needs TLS and client authentication: -tls-cert and
// -tls-key, with -tls-client-ca (mutual TLS) or -sasl-users FILE (lines
// of user:password; clients authenticate with SCRAM-SHA-256 or -512), or
// the loudly named -insecure-allow-open-network. Clients then take -tls-ca
// (or -tls), -tls-cert and -tls-key, -sasl-mechanism and -sasl-user, with
// the password in $REPLOG_SASL_PASSWORD or -sasl-password-file, never on
// the command line.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// env is what a subcommand gets from its process, so tests can run it
// in-process with their own.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

// usageError is bad usage: exit code 2. printed is set when the flag
// package has already told the user.
type usageError struct {
	msg     string
	printed bool
}

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

const usage = `usage: replog COMMAND [flags]

commands:
  serve -dir DIR -kafka HOST:PORT        run a node serving Kafka clients
        [-tls-cert F -tls-key F [-tls-client-ca F]] [-sasl-users F]
  topic create NAME [-partitions N] [-replicas N] [-config k=v ...]
  topic list | describe NAME | delete NAME
  produce TOPIC [-key-sep SEP]           lines of stdin as records
  consume TOPIC [-group G] [-from earliest|latest] [-n N]
  group list | describe G
  bench [-records N] [-size B] [-acks all|leader|none]   measure a broker

Client commands take -brokers ADDR[,ADDR] (default $REPLOG_BROKERS or
127.0.0.1:9092), and for a secured listener -tls-ca F, -tls-cert F
-tls-key F, -sasl-mechanism M -sasl-user U (password in
$REPLOG_SASL_PASSWORD or -sasl-password-file F); "replog COMMAND -h"
lists a command's flags. Off loopback, serve requires TLS with mutual TLS
or SASL users, unless -insecure-allow-open-network.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], env{os.Stdin, os.Stdout, os.Stderr, os.Getenv})
	stop()
	os.Exit(code)
}

// run runs the command line args and returns the exit code.
func run(ctx context.Context, args []string, e env) int {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, usage)
		return exitUsage
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		err = serve(ctx, rest, e)
	case "topic":
		err = topicCmd(ctx, rest, e)
	case "produce":
		err = produce(ctx, rest, e)
	case "consume":
		err = consume(ctx, rest, e)
	case "group":
		err = groupCmd(ctx, rest, e)
	case "bench":
		err = bench(ctx, rest, e)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(e.stdout, usage)
		return exitOK
	default:
		err = usagef("unknown command %q", cmd)
	}
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		if !ue.printed {
			fmt.Fprintf(e.stderr, "replog: %v\nrun \"replog -h\" for usage\n", err)
		}
		return exitUsage
	}
	fmt.Fprintf(e.stderr, "replog: %v\n", err)
	return exitError
}

// newFlags returns a flag set for a subcommand whose errors are returned,
// not printed with an exit.
func newFlags(name string, e env) *flag.FlagSet {
	fs := flag.NewFlagSet("replog "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	return fs
}

// parse parses args with fs, allowing flags after positional arguments
// ("topic create NAME -partitions 4"), which the flag package alone stops
// at. It returns the positional arguments; "--" ends the flags. A flag
// error is a usage error (or flag.ErrHelp).
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, &usageError{msg: err.Error(), printed: true}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// fs.Parse stops at "--" (consumed) or at the first non-flag.
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// wantArgs checks the count of positional arguments.
func wantArgs(pos []string, n int, what string) error {
	if len(pos) != n {
		return usagef("want %s, got %d argument(s): %q", what, len(pos), pos)
	}
	return nil
}
