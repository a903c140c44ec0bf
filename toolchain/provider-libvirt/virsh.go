package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// virsh runs `virsh -q -c URI ...`: the same code drives a local qemu:///system and a remote
// qemu+ssh:// hypervisor. Arguments never carry secrets (user-data goes through files).
type virsh struct {
	uri string
}

// virshError keeps virsh's own message: it is what `pulumi up` shows.
type virshError struct {
	args   []string
	stderr string
	err    error
}

func (e *virshError) Error() string {
	msg := e.stderr
	if msg == "" {
		msg = e.err.Error()
	}
	return fmt.Sprintf("virsh %s: %s", strings.Join(e.args, " "), msg)
}

func (e *virshError) Unwrap() error { return e.err }

func (v virsh) run(ctx context.Context, args ...string) (string, error) {
	full := append([]string{"-q", "-c", v.uri}, args...)
	cmd := exec.CommandContext(ctx, "virsh", full...)
	cmd.WaitDelay = 10 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), &virshError{args: args, stderr: strings.TrimSpace(stderr.String()), err: err}
	}
	return strings.TrimSpace(stdout.String()), nil
}

// runXML writes doc to a temporary file and runs `virsh <verb> [args...] FILE`.
func (v virsh) runXML(ctx context.Context, doc string, verb string, args ...string) (string, error) {
	dir, err := os.MkdirTemp("", "pulumi-libvirt-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "definition.xml")
	if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
		return "", err
	}
	return v.run(ctx, append(append([]string{verb}, args...), file)...)
}

func virshStderr(err error) string {
	var ve *virshError
	if errors.As(err, &ve) {
		return ve.stderr
	}
	return ""
}

// isNotFound: libvirt's VIR_ERR_NO_{DOMAIN,NETWORK,STORAGE_POOL,STORAGE_VOL} messages. For a
// domain virsh 9 prints only its own "failed to get domain 'X'" line (lookup by uuid, id, name).
func isNotFound(err error) bool {
	return stderrNotFound(virshStderr(err))
}

func stderrNotFound(s string) bool {
	if strings.Contains(s, "not found:") || strings.Contains(s, "no storage vol with matching") ||
		strings.Contains(s, "no domain with matching") || strings.Contains(s, "no network with matching") ||
		strings.Contains(s, "no storage pool with matching") {
		return true
	}
	return strings.HasPrefix(s, "error: failed to get domain '") && !strings.Contains(s, "\n")
}

// isNotActive: destroying something that is already stopped.
func isNotActive(err error) bool {
	s := virshStderr(err)
	return strings.Contains(s, "not running") || strings.Contains(s, "not active")
}

// ignore returns nil for errors the caller tolerates (e.g. deleting what is already gone).
func ignore(err error, ok ...func(error) bool) error {
	if err == nil {
		return nil
	}
	for _, f := range ok {
		if f(err) {
			return nil
		}
	}
	return err
}

// retry runs f until it succeeds, fails with an error `transient` does not accept, or timeout passes.
func retry(ctx context.Context, timeout time.Duration, transient func(error) bool, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil || !transient(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Second):
		}
	}
}
