package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	errorTailLines = 20               // lines of each logged stream quoted in a failure
	maxLogLine     = 64 * 1024        // a longer "line" is logged in pieces
	pipeWaitDelay  = 10 * time.Second // after the shell exits, how long background children may hold its stdout/stderr
	minMaskedLen   = 4                // secret values shorter than this are not masked (too many false hits)
)

// killGrace is how long a canceled command's process group has between SIGTERM and SIGKILL. The
// longest cleanup among the project's commands is the verifier's after a cancel mid-drill: it undoes
// what the drill broke (each undo one ssh or virsh call: ssh alone may take its 15 s ConnectTimeout on
// a loaded host) and waits for one VIP holder, all within verifier/cancel.py BUDGET_S = 20 s (a unit
// test there keeps BUDGET_S + 5 s <= killGrace). Day 2 only removes its key directory and closes its
// ssh masters (well under a second). 3 s, the old value, cut the verifier's restore short: a VRRP cut
// table (split brain), a paused VM or a lowered priority stayed behind.
const killGrace = 30 * time.Second

// runner starts commands in their own process groups and remembers them so Cancel can stop them.
type runner struct {
	mu       sync.Mutex
	running  map[int]chan struct{} // process group id -> closed when the command has exited
	canceled bool
	grace    time.Duration // SIGTERM -> SIGKILL (killGrace; tests shorten it)
}

func newRunner() *runner { return &runner{running: map[int]chan struct{}{}, grace: killGrace} }

// job is one command to run.
type job struct {
	Field   string // "create", "update" or "delete": named in errors
	Command string
	Spec    spec
	Env     []string
	// Log receives each output line (already masked) of the streams Spec.Logging allows; nil: none.
	Log func(stream, line string)
}

type result struct{ Stdout, Stderr string }

// run runs j to completion. A non-zero exit, a failure to start, cancellation or ctx expiry is an
// error whose text holds the exit status and (only for the streams Spec.Logging allows) the tail
// of the output, with secret input values masked.
func (r *runner) run(ctx context.Context, j job) (result, error) {
	m := newMasker(j.Spec.Secrets)
	mode := j.Spec.Logging
	emit := func(stream string) func(string) {
		if j.Log == nil {
			return nil
		}
		return func(line string) { j.Log(stream, m.mask(line)) }
	}
	var stdoutEmit, stderrEmit func(string)
	if logsStdout(mode) {
		stdoutEmit = emit("stdout")
	}
	if logsStderr(mode) {
		stderrEmit = emit("stderr")
	}
	stdout := &lineWriter{emit: stdoutEmit}
	stderr := &lineWriter{emit: stderrEmit}

	argv := append(append([]string{}, j.Spec.Interpreter...), j.Command)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = j.Env
	cmd.Dir = j.Spec.Dir
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if j.Spec.Stdin != nil {
		cmd.Stdin = strings.NewReader(*j.Spec.Stdin)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = pipeWaitDelay

	r.mu.Lock()
	if r.canceled {
		r.mu.Unlock()
		return result{}, fmt.Errorf("%s command not run: the provider was canceled", j.Field)
	}
	if err := cmd.Start(); err != nil {
		r.mu.Unlock()
		where := ""
		if j.Spec.Dir != "" {
			where = fmt.Sprintf(" in directory %q", j.Spec.Dir)
		}
		return result{}, fmt.Errorf("%s command could not start (interpreter %q%s): %s",
			j.Field, j.Spec.Interpreter[0], where, m.mask(err.Error()))
	}
	pgid := cmd.Process.Pid
	done := make(chan struct{})
	r.running[pgid] = done
	r.mu.Unlock()

	stopped := make(chan string, 1) // why the command was stopped, if it was
	go func() {
		select {
		case <-done:
		case <-ctx.Done():
			why := "canceled"
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				why = "timed out"
			}
			stopped <- why
			killGroup(pgid, done, r.grace)
		}
	}()

	err := cmd.Wait()
	close(done)
	r.mu.Lock()
	delete(r.running, pgid)
	r.mu.Unlock()
	stdout.flush()
	stderr.flush()

	res := result{Stdout: cleanOutput(stdout.all.String()), Stderr: cleanOutput(stderr.all.String())}
	if errors.Is(err, exec.ErrWaitDelay) {
		// The command exited 0, but something it started in the background kept its stdout/stderr
		// open; the output read until then is kept.
		if j.Log != nil {
			j.Log("stderr", fmt.Sprintf("note: background processes of the %s command kept its output open; "+
				"stopped reading after %s", j.Field, pipeWaitDelay))
		}
		err = nil
	}
	if err == nil {
		return res, nil
	}

	var status string
	var exitErr *exec.ExitError
	select {
	case why := <-stopped:
		status = why + " (its process group was killed)"
	default:
		switch {
		case errors.As(err, &exitErr):
			ws, _ := exitErr.Sys().(syscall.WaitStatus)
			if ws.Signaled() {
				status = fmt.Sprintf("was killed by signal %d (%s)", int(ws.Signal()), ws.Signal())
			} else {
				status = fmt.Sprintf("failed with exit code %d", exitErr.ExitCode())
			}
		default:
			status = "failed: " + m.mask(err.Error())
		}
	}
	r.mu.Lock()
	if r.canceled {
		status += "; the provider was canceled"
	}
	r.mu.Unlock()
	return res, errors.New(failureText(j.Field, status, mode, res, m))
}

// failureText is the error message of a failed command: status, then the tail of each stream the
// logging mode allows. With logging "none" no output at all is included.
func failureText(field, status, mode string, res result, m *masker) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s command %s", field, status)
	if mode == loggingNone {
		b.WriteString(" (output not shown: logging is \"none\")")
		return b.String()
	}
	section := func(name, text string) {
		if strings.TrimSpace(text) == "" {
			fmt.Fprintf(&b, "\n%s: (empty)", name)
			return
		}
		lines, omitted := tailLines(text, errorTailLines)
		if omitted > 0 {
			fmt.Fprintf(&b, "\n%s (last %d of %d lines):", name, len(lines), len(lines)+omitted)
		} else {
			fmt.Fprintf(&b, "\n%s:", name)
		}
		for _, l := range lines {
			b.WriteString("\n    " + m.mask(l))
		}
	}
	if logsStderr(mode) {
		section("stderr", res.Stderr)
	}
	if logsStdout(mode) {
		section("stdout", res.Stdout)
	}
	return b.String()
}

// tailLines returns the last n lines of text and how many lines came before them.
func tailLines(text string, n int) ([]string, int) {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if len(lines) <= n {
		return lines, 0
	}
	return lines[len(lines)-n:], len(lines) - n
}

// cleanOutput is a captured stream as an output property: valid UTF-8, one trailing newline trimmed.
func cleanOutput(s string) string {
	return strings.ToValidUTF8(strings.TrimSuffix(s, "\n"), "\uFFFD")
}

// killGroup sends SIGTERM to a process group, then SIGKILL if it has not exited after grace.
func killGroup(pgid int, done <-chan struct{}, grace time.Duration) {
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
}

// cancelAll stops every running command and refuses new ones. It does not wait.
func (r *runner) cancelAll() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.canceled = true
	for pgid, done := range r.running {
		go killGroup(pgid, done, r.grace)
	}
	return len(r.running)
}

// lineWriter captures a stream and hands each complete line to emit (when set).
type lineWriter struct {
	all     bytes.Buffer
	partial []byte
	emit    func(string)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.all.Write(p)
	if w.emit == nil {
		return len(p), nil
	}
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		w.emit(strings.TrimSuffix(string(w.partial[:i]), "\r"))
		w.partial = w.partial[i+1:]
	}
	if len(w.partial) > maxLogLine {
		w.emit(string(w.partial))
		w.partial = nil
	}
	return len(p), nil
}

// flush emits an unterminated last line.
func (w *lineWriter) flush() {
	if w.emit != nil && len(w.partial) > 0 {
		w.emit(string(w.partial))
	}
	w.partial = nil
}

// masker replaces the values of secret inputs with "[secret]" in text shown to the user. A
// multi-line secret (a private key) is also masked line by line, since output is logged per line.
type masker struct{ secrets []string }

func newMasker(secrets []string) *masker {
	seen := map[string]bool{}
	var list []string
	add := func(s string) {
		if len(s) >= minMaskedLen && !seen[s] {
			seen[s] = true
			list = append(list, s)
		}
	}
	for _, s := range secrets {
		add(s)
		if strings.Contains(s, "\n") {
			for _, l := range strings.Split(s, "\n") {
				add(strings.TrimSpace(l))
			}
		}
	}
	sort.Slice(list, func(i, j int) bool { return len(list[i]) > len(list[j]) })
	return &masker{secrets: list}
}

func (m *masker) mask(s string) string {
	for _, secret := range m.secrets {
		s = strings.ReplaceAll(s, secret, secretPlaceholder)
	}
	return s
}
