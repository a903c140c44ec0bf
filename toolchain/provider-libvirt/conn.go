package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket"
	"github.com/digitalocean/go-libvirt/socket/dialers"
)

const defaultSocket = "/var/run/libvirt/libvirt-sock" // libvirtd's, on this host or over ssh

// dial opens one libvirt RPC connection (go-libvirt) for a libvirt URI:
//
//	qemu:///system, qemu+unix:///system[?socket=PATH]  the local daemon's unix socket
//	qemu+tcp://HOST[:PORT]/system                      plain TCP (libvirtd's listen_tcp, port 16509)
//	qemu+ssh://[USER@]HOST[:PORT]/system[?keyfile=F&socket=PATH&no_verify=1]
//	    the system `ssh` client runs `nc -U SOCKET` on HOST and carries the RPC over its stdio,
//	    as libvirt's own client does (its netcat mode). So all of ~/.ssh/config and
//	    /etc/ssh/ssh_config apply (HostName, User, Port, IdentityFile, ProxyJump, known hosts,
//	    agent); the URI's user, port and keyfile override them. No password prompts (BatchMode).
//	    HOST needs `nc` with -U (netcat-openbsd).
//
// Any other transport (tls, libssh, libssh2, ext) is refused with a message.
func dial(uri string) (*libvirt.Libvirt, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return nil, fmt.Errorf("libvirt uri %q: %w", uri, err)
	}
	_, transport, _ := strings.Cut(u.Scheme, "+")
	q := u.Query()
	var d socket.Dialer
	switch {
	case (transport == "" || transport == "unix") && u.Host == "":
		d = dialers.NewLocal(dialers.WithSocket(cmp.Or(q.Get("socket"), defaultSocket)))
	case transport == "tcp":
		d = dialers.NewRemote(u.Hostname(), dialers.UsePort(cmp.Or(u.Port(), "16509")))
	case transport == "ssh":
		d = sshDialer{u: u}
	default:
		return nil, fmt.Errorf("libvirt uri %q: transport %q is not supported by this pulumi-resource-libvirt "+
			"(unix, ssh, tcp)", uri, transport)
	}
	l := libvirt.NewWithDialer(d)
	if err := l.ConnectToURI(libvirt.RemoteURI(u)); err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", uri, err)
	}
	return l, nil
}

// sshDialer carries the libvirt RPC over a `ssh HOST nc -U SOCKET` process, whose stdin and stdout
// are one end of a socket pair; ssh's messages go to this plugin's stderr (the engine's log).
type sshDialer struct{ u *url.URL }

func (s sshDialer) Dial() (net.Conn, error) {
	q := s.u.Query()
	args := []string{"-T", "-e", "none", "-o", "BatchMode=yes"}
	if p := s.u.Port(); p != "" {
		args = append(args, "-p", p)
	}
	if user := s.u.User.Username(); user != "" {
		args = append(args, "-l", user)
	}
	if k := q.Get("keyfile"); k != "" {
		args = append(args, "-i", k)
	}
	if q.Get("no_verify") == "1" {
		args = append(args, "-o", "StrictHostKeyChecking=no")
	}
	sock := cmp.Or(q.Get("socket"), defaultSocket)
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	theirs, ours := os.NewFile(uintptr(fds[0]), "ssh"), os.NewFile(uintptr(fds[1]), "libvirt")
	defer theirs.Close()
	defer ours.Close()
	cmd := exec.Command("ssh", append(args, "--", s.u.Hostname(), "nc", "-U", sock)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = theirs, theirs, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("ssh: %w", err)
	}
	go func() { _ = cmd.Wait() }() // ssh ends when the connection closes (EOF on its stdin)
	return net.FileConn(ours)
}

// ---- errors: libvirt's error numbers, never its (translated) messages ---------------------------

func hasCode(err error, codes ...libvirt.ErrorNumber) bool {
	var e libvirt.Error
	return errors.As(err, &e) && slices.Contains(codes, libvirt.ErrorNumber(e.Code))
}

// isNotFound: the object does not exist (any of the four kinds).
func isNotFound(err error) bool {
	return hasCode(err, libvirt.ErrNoDomain, libvirt.ErrNoNetwork, libvirt.ErrNoStoragePool, libvirt.ErrNoStorageVol)
}

// isNotActive: stopping something that is already stopped.
func isNotActive(err error) bool { return hasCode(err, libvirt.ErrOperationInvalid) }

// isBusy: the storage driver reports a volume in use or a pool with jobs running (another upload)
// as VIR_ERR_INTERNAL_ERROR; callers retry it for a bounded time.
func isBusy(err error) bool { return hasCode(err, libvirt.ErrInternalError) }

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
