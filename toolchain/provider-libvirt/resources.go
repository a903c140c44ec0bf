package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
)

// kind is one resource type: its inputs, defaults, checks and lifecycle.
type kind struct {
	newArgs       func() any
	required      []string
	defaults      map[string]resource.PropertyValue
	validate      func(args any) error
	create        func(ctx context.Context, o *op, args any) (id string, outs resource.PropertyMap, err error)
	exists        func(ctx context.Context, v virsh, id string) (bool, error)
	delete        func(ctx context.Context, o *op, id string) error
	computed      []string // outputs this provider adds to the echoed inputs
	secretOutputs []string // outputs that are always secret
}

// op is one Create or Delete call.
type op struct {
	p   *libvirtProvider
	v   virsh
	urn string
}

func (o *op) status(ctx context.Context, format string, a ...any) {
	o.p.status(ctx, o.urn, fmt.Sprintf(format, a...))
}

// cleanupCtx outlives a cancelled request, so a half-made object is still removed.
func cleanupCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
}

var kinds = map[string]*kind{
	"libvirt:index/network:Network": {
		newArgs:  func() any { return &networkArgs{} },
		required: []string{"name"},
		defaults: map[string]resource.PropertyValue{
			"mode": resource.NewStringProperty("nat"), "autostart": resource.NewBoolProperty(false)},
		validate: func(a any) error { _, err := networkDefinition(*a.(*networkArgs)); return err },
		create:   createNetwork,
		exists:   existsBy("net-info"),
		delete:   deleteNetwork,
		computed: []string{"bridge"},
	},
	"libvirt:index/pool:Pool": {
		newArgs:  func() any { return &poolArgs{} },
		required: []string{"name", "type", "path"},
		validate: func(a any) error {
			pa := *a.(*poolArgs)
			if !filepath.IsAbs(pa.Path) {
				return fmt.Errorf("pool %q: path %q must be absolute", pa.Name, pa.Path)
			}
			_, err := poolDefinition(pa)
			return err
		},
		create: createPool,
		exists: existsBy("pool-info"),
		delete: deletePool,
	},
	"libvirt:index/volume:Volume": {
		newArgs:  func() any { return &volumeArgs{} },
		required: []string{"name", "pool"},
		validate: validateVolume,
		create:   createVolume,
		exists:   existsBy("vol-info"),
		delete:   deleteVolume,
		computed: []string{"size", "format"},
	},
	"libvirt:index/cloudInitDisk:CloudInitDisk": {
		newArgs:       func() any { return &cloudInitArgs{} },
		required:      []string{"name", "pool"},
		create:        createCloudInit,
		exists:        existsBy("vol-info"),
		delete:        deleteVolume,
		secretOutputs: []string{"userData"},
	},
	"libvirt:index/domain:Domain": {
		newArgs:  func() any { return &domainArgs{} },
		required: []string{"name"},
		defaults: map[string]resource.PropertyValue{
			"type": resource.NewStringProperty("kvm"), "vcpu": resource.NewNumberProperty(1),
			"memory": resource.NewNumberProperty(512), "running": resource.NewBoolProperty(true),
			"autostart": resource.NewBoolProperty(false)},
		validate: validateDomain,
		create:   createDomain,
		exists:   existsBy("dominfo"),
		delete:   deleteDomain,
	},
}

// existsBy: `virsh <info verb> ID` succeeds while the object exists.
func existsBy(verb string) func(ctx context.Context, v virsh, id string) (bool, error) {
	return func(ctx context.Context, v virsh, id string) (bool, error) {
		_, err := v.run(ctx, verb, id)
		if err == nil {
			return true, nil
		}
		if isNotFound(err) {
			return false, nil
		}
		return false, err
	}
}

// applyXSLT runs the user's stylesheet over a generated document (xsltproc on this host).
func applyXSLT(ctx context.Context, doc, xslt string) (string, error) {
	if strings.TrimSpace(xslt) == "" {
		return doc, nil
	}
	dir, err := os.MkdirTemp("", "pulumi-libvirt-xslt-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	in, style := filepath.Join(dir, "in.xml"), filepath.Join(dir, "style.xsl")
	if err := os.WriteFile(in, []byte(doc), 0o600); err != nil {
		return "", err
	}
	if err := os.WriteFile(style, []byte(xslt), 0o600); err != nil {
		return "", err
	}
	out, err := exec.CommandContext(ctx, "xsltproc", "--nonet", style, in).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("xsltproc (xml.xslt): %v: %s", err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func xsltOf(x *xsltArgs) string {
	if x == nil {
		return ""
	}
	return x.Xslt
}

// ---- Network ------------------------------------------------------------------------------------

func createNetwork(ctx context.Context, o *op, args any) (string, resource.PropertyMap, error) {
	a := *args.(*networkArgs)
	doc, err := networkDefinition(a)
	if err != nil {
		return "", nil, err
	}
	if doc, err = applyXSLT(ctx, doc, xsltOf(a.Xml)); err != nil {
		return "", nil, err
	}
	if _, err := o.v.runXML(ctx, doc, "net-define"); err != nil {
		return "", nil, err
	}
	fail := func(err error) (string, resource.PropertyMap, error) {
		c, cancel := cleanupCtx(ctx)
		defer cancel()
		_, _ = o.v.run(c, "net-destroy", a.Name)
		_, _ = o.v.run(c, "net-undefine", a.Name)
		return "", nil, err
	}
	if _, err := o.v.run(ctx, "net-start", a.Name); err != nil {
		return fail(err)
	}
	if a.Autostart {
		if _, err := o.v.run(ctx, "net-autostart", a.Name); err != nil {
			return fail(err)
		}
	}
	uuid, err := o.v.run(ctx, "net-uuid", a.Name)
	if err != nil {
		return fail(err)
	}
	outs := resource.PropertyMap{}
	if a.Bridge == "" {
		if x, err := o.v.run(ctx, "net-dumpxml", uuid); err == nil {
			if br, err := networkBridge(x); err == nil && br != "" {
				outs["bridge"] = resource.NewStringProperty(br)
			}
		}
	}
	return uuid, outs, nil
}

func deleteNetwork(ctx context.Context, o *op, id string) error {
	if _, err := o.v.run(ctx, "net-destroy", id); ignore(err, isNotFound, isNotActive) != nil {
		return err
	}
	_, err := o.v.run(ctx, "net-undefine", id)
	return ignore(err, isNotFound)
}

// ---- Pool ---------------------------------------------------------------------------------------

func createPool(ctx context.Context, o *op, args any) (string, resource.PropertyMap, error) {
	a := *args.(*poolArgs)
	doc, err := poolDefinition(a)
	if err != nil {
		return "", nil, err
	}
	if _, err := o.v.runXML(ctx, doc, "pool-define"); err != nil {
		return "", nil, err
	}
	fail := func(err error) (string, resource.PropertyMap, error) {
		c, cancel := cleanupCtx(ctx)
		defer cancel()
		_, _ = o.v.run(c, "pool-destroy", a.Name)
		_, _ = o.v.run(c, "pool-undefine", a.Name)
		return "", nil, err
	}
	for _, verb := range []string{"pool-build", "pool-start", "pool-autostart"} {
		if _, err := o.v.run(ctx, verb, a.Name); err != nil {
			return fail(err)
		}
	}
	uuid, err := o.v.run(ctx, "pool-uuid", a.Name)
	if err != nil {
		return fail(err)
	}
	return uuid, nil, nil
}

func deletePool(ctx context.Context, o *op, id string) error {
	if _, err := o.v.run(ctx, "pool-info", id); err != nil {
		return ignore(err, isNotFound)
	}
	empty := false
	if out, err := o.v.run(ctx, "vol-list", "--pool", id); err == nil {
		empty = strings.TrimSpace(out) == ""
	}
	if _, err := o.v.run(ctx, "pool-destroy", id); ignore(err, isNotFound, isNotActive) != nil {
		return err
	}
	if empty {
		// A dir pool's delete is an rmdir: it also refuses a directory holding files libvirt skipped.
		if _, err := o.v.run(ctx, "pool-delete", id); err != nil && !isNotFound(err) {
			o.p.warn(ctx, o.urn, fmt.Sprintf("pool directory kept: %v", err))
		}
	} else {
		o.p.warn(ctx, o.urn, "pool directory kept: it still holds volumes")
	}
	_, err := o.v.run(ctx, "pool-undefine", id)
	return ignore(err, isNotFound)
}

// ---- Volume and CloudInitDisk -------------------------------------------------------------------

func validateVolume(args any) error {
	a := *args.(*volumeArgs)
	ways := 0
	for _, s := range []string{a.Source, a.BaseVolumeID, a.BaseVolumeName} {
		if s != "" {
			ways++
		}
	}
	if ways > 1 {
		return fmt.Errorf("volume %q: give one of source, baseVolumeId, baseVolumeName", a.Name)
	}
	if ways == 0 && a.Size <= 0 {
		return fmt.Errorf("volume %q: give source, baseVolumeId, baseVolumeName or size", a.Name)
	}
	if a.BaseVolumeName != "" && a.BaseVolumePool == "" {
		return fmt.Errorf("volume %q: baseVolumeName needs baseVolumePool", a.Name)
	}
	switch a.Format {
	case "", "qcow2", "raw":
	default:
		return fmt.Errorf("volume %q: format %q is not supported (qcow2, raw)", a.Name, a.Format)
	}
	if (a.BaseVolumeID != "" || a.BaseVolumeName != "") && a.Format == "raw" {
		return fmt.Errorf("volume %q: an overlay over a base volume must be qcow2", a.Name)
	}
	return nil
}

func volumeInfoOf(ctx context.Context, v virsh, pathOrKey string, pool ...string) (volumeInfo, error) {
	args := append([]string{"vol-dumpxml"}, pool...)
	x, err := v.run(ctx, append(args, pathOrKey)...)
	if err != nil {
		return volumeInfo{}, err
	}
	return parseVolumeXML(x)
}

// fetchSource gives a local file for a volume's source: the path itself, or a download.
func fetchSource(ctx context.Context, src string) (path string, cleanup func(), err error) {
	u, perr := url.Parse(src)
	if perr != nil || u.Scheme == "" {
		return src, func() {}, nil
	}
	switch u.Scheme {
	case "file":
		return u.Path, func() {}, nil
	case "http", "https":
	default:
		return "", nil, fmt.Errorf("source %q: scheme %q is not supported (path, file://, http://, https://)", src, u.Scheme)
	}
	f, err := os.CreateTemp("", "pulumi-libvirt-download-")
	if err != nil {
		return "", nil, err
	}
	cleanup = func() { os.Remove(f.Name()) }
	defer f.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
	if err != nil {
		cleanup()
		return "", nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cleanup()
		return "", nil, fmt.Errorf("downloading %s: %w", src, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		cleanup()
		return "", nil, fmt.Errorf("downloading %s: HTTP %s", src, resp.Status)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("downloading %s: %w", src, err)
	}
	if err := f.Close(); err != nil {
		cleanup()
		return "", nil, err
	}
	return f.Name(), cleanup, nil
}

// detectFormat: qcow2 by its magic, raw otherwise.
func detectFormat(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	magic := make([]byte, 4)
	if n, _ := io.ReadFull(f, magic); n == 4 && string(magic) == "QFI\xfb" {
		return "qcow2", nil
	}
	return "raw", nil
}

func isBusy(err error) bool {
	s := virshStderr(err)
	return strings.Contains(s, "asynchronous jobs") || strings.Contains(s, "still in use") ||
		strings.Contains(s, "in use by") || strings.Contains(s, "has asynchronous")
}

// uploadVolume creates volume `name` of the file's size in `format` and streams the file into it.
func uploadVolume(ctx context.Context, o *op, pool, name, format, file, xslt string) error {
	st, err := os.Stat(file)
	if err != nil {
		return err
	}
	doc, err := volumeDefinition(name, format, uint64(st.Size()), "", "")
	if err != nil {
		return err
	}
	if doc, err = applyXSLT(ctx, doc, xslt); err != nil {
		return err
	}
	if _, err := o.v.runXML(ctx, doc, "vol-create", "--pool", pool); err != nil {
		return err
	}
	o.status(ctx, "uploading %d MiB into %s/%s", st.Size()>>20, pool, name)
	_, err = o.v.run(ctx, "vol-upload", "--pool", pool, name, file)
	o.status(ctx, "")
	if err != nil {
		c, cancel := cleanupCtx(ctx)
		defer cancel()
		_ = retry(c, time.Minute, isBusy, func() error {
			_, e := o.v.run(c, "vol-delete", "--pool", pool, name)
			return e
		})
		return err
	}
	return nil
}

func createVolume(ctx context.Context, o *op, args any) (string, resource.PropertyMap, error) {
	a := *args.(*volumeArgs)
	format := a.Format
	switch {
	case a.BaseVolumeID != "" || a.BaseVolumeName != "":
		var base volumeInfo
		var err error
		if a.BaseVolumeID != "" {
			base, err = volumeInfoOf(ctx, o.v, a.BaseVolumeID)
		} else {
			base, err = volumeInfoOf(ctx, o.v, a.BaseVolumeName, "--pool", a.BaseVolumePool)
		}
		if err != nil {
			return "", nil, err
		}
		capacity := base.Capacity
		if uint64(a.Size) > capacity {
			capacity = uint64(a.Size)
		}
		format = "qcow2"
		doc, err := volumeDefinition(a.Name, format, capacity, base.Path, base.Format)
		if err != nil {
			return "", nil, err
		}
		if doc, err = applyXSLT(ctx, doc, xsltOf(a.Xml)); err != nil {
			return "", nil, err
		}
		if _, err := o.v.runXML(ctx, doc, "vol-create", "--pool", a.Pool); err != nil {
			return "", nil, err
		}
	case a.Source != "":
		file, cleanup, err := fetchSource(ctx, a.Source)
		if err != nil {
			return "", nil, fmt.Errorf("volume %q: %w", a.Name, err)
		}
		defer cleanup()
		if format == "" {
			if format, err = detectFormat(file); err != nil {
				return "", nil, fmt.Errorf("volume %q: source: %w", a.Name, err)
			}
		}
		if _, err := os.Stat(file); err != nil {
			return "", nil, fmt.Errorf("volume %q: source: %w", a.Name, err)
		}
		if err := uploadVolume(ctx, o, a.Pool, a.Name, format, file, xsltOf(a.Xml)); err != nil {
			return "", nil, err
		}
		// libvirt knows the bytes now, not what they are: re-read the pool so a qcow2's virtual
		// size (from its header) becomes the volume's capacity. Waits out other uploads' jobs.
		if err := retry(ctx, 30*time.Minute, isBusy, func() error {
			_, e := o.v.run(ctx, "pool-refresh", a.Pool)
			return e
		}); err != nil {
			return "", nil, err
		}
	default:
		if format == "" {
			format = "qcow2"
		}
		doc, err := volumeDefinition(a.Name, format, uint64(a.Size), "", "")
		if err != nil {
			return "", nil, err
		}
		if doc, err = applyXSLT(ctx, doc, xsltOf(a.Xml)); err != nil {
			return "", nil, err
		}
		if _, err := o.v.runXML(ctx, doc, "vol-create", "--pool", a.Pool); err != nil {
			return "", nil, err
		}
	}
	path, err := o.v.run(ctx, "vol-path", "--pool", a.Pool, a.Name)
	if err != nil {
		return "", nil, err
	}
	outs := resource.PropertyMap{}
	if info, err := volumeInfoOf(ctx, o.v, path); err == nil {
		outs["size"] = resource.NewNumberProperty(float64(info.Capacity))
		if info.Format != "" {
			format = info.Format
		}
	}
	if a.Format == "" {
		outs["format"] = resource.NewStringProperty(format)
	}
	return path, outs, nil
}

func deleteVolume(ctx context.Context, o *op, id string) error {
	return retry(ctx, 2*time.Minute, isBusy, func() error {
		_, err := o.v.run(ctx, "vol-delete", id)
		return ignore(err, isNotFound)
	})
}

func createCloudInit(ctx context.Context, o *op, args any) (string, resource.PropertyMap, error) {
	a := *args.(*cloudInitArgs)
	dir, err := os.MkdirTemp("", "pulumi-libvirt-cloudinit-") // 0700: user-data is a secret
	if err != nil {
		return "", nil, err
	}
	defer os.RemoveAll(dir)
	files := []string{"user-data", "meta-data"}
	contents := map[string]string{"user-data": a.UserData, "meta-data": a.MetaData}
	if a.NetworkConfig != "" {
		files = append(files, "network-config")
		contents["network-config"] = a.NetworkConfig
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(contents[f]), 0o600); err != nil {
			return "", nil, err
		}
	}
	iso := filepath.Join(dir, "seed.iso")
	cmd := exec.CommandContext(ctx, "mkisofs", append([]string{"-output", iso, "-volid", "cidata", "-joliet", "-rock"}, files...)...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", nil, fmt.Errorf("mkisofs: %v: %s", err, strings.TrimSpace(string(out)))
	}
	if err := uploadVolume(ctx, o, a.Pool, a.Name, "raw", iso, ""); err != nil {
		return "", nil, err
	}
	path, err := o.v.run(ctx, "vol-path", "--pool", a.Pool, a.Name)
	if err != nil {
		return "", nil, err
	}
	return path, nil, nil
}

// ---- Domain -------------------------------------------------------------------------------------

func validateDomain(args any) error {
	a := *args.(*domainArgs)
	for i, nic := range a.NetworkInterfaces {
		if nic.WaitForLease {
			return fmt.Errorf("domain %q: networkInterfaces[%d].waitForLease is not supported", a.Name, i)
		}
	}
	if a.Initrd != "" && a.Kernel == "" {
		return fmt.Errorf("domain %q: initrd needs kernel", a.Name)
	}
	// networkId is resolved to a name by Create; a placeholder stands in for it here.
	var r resolvedDomain
	for _, nic := range a.NetworkInterfaces {
		name := ""
		if nic.NetworkID != "" {
			name = "network-" + nic.NetworkID
		}
		r.NetworkNames = append(r.NetworkNames, name)
	}
	_, err := domainDefinition(a, r)
	return err
}

func createDomain(ctx context.Context, o *op, args any) (string, resource.PropertyMap, error) {
	a := *args.(*domainArgs)
	var r resolvedDomain
	for i, d := range a.Disks {
		format := ""
		if d.VolumeID != "" {
			info, err := volumeInfoOf(ctx, o.v, d.VolumeID)
			if err != nil {
				return "", nil, fmt.Errorf("disks[%d].volumeId: %w", i, err)
			}
			format = info.Format
		}
		r.DiskFormats = append(r.DiskFormats, format)
	}
	for i, nic := range a.NetworkInterfaces {
		name := nic.NetworkName
		if nic.NetworkID != "" {
			n, err := o.v.run(ctx, "net-name", nic.NetworkID)
			if err != nil {
				return "", nil, fmt.Errorf("networkInterfaces[%d].networkId: %w", i, err)
			}
			name = n
		}
		r.NetworkNames = append(r.NetworkNames, name)
	}
	doc, err := domainDefinition(a, r)
	if err != nil {
		return "", nil, err
	}
	if doc, err = applyXSLT(ctx, doc, xsltOf(a.Xml)); err != nil {
		return "", nil, err
	}
	if _, err := o.v.runXML(ctx, doc, "define"); err != nil {
		return "", nil, err
	}
	uuid, err := o.v.run(ctx, "domuuid", a.Name)
	if err != nil {
		return "", nil, err
	}
	fail := func(err error) (string, resource.PropertyMap, error) {
		c, cancel := cleanupCtx(ctx)
		defer cancel()
		_ = deleteDomain(c, o, uuid)
		return "", nil, err
	}
	if a.Running == nil || *a.Running {
		if _, err := o.v.run(ctx, "start", uuid); err != nil {
			return fail(err)
		}
	}
	if a.Autostart {
		if _, err := o.v.run(ctx, "autostart", uuid); err != nil {
			return fail(err)
		}
	}
	outs := resource.PropertyMap{}
	// MACs libvirt chose for interfaces without one become outputs.
	if x, err := o.v.run(ctx, "dumpxml", "--inactive", uuid); err == nil {
		if macs, err := domainMACs(x); err == nil {
			nics := make([]resource.PropertyValue, len(a.NetworkInterfaces))
			filled := false
			for i, nic := range a.NetworkInterfaces {
				m := resource.PropertyMap{}
				for k, v := range map[string]string{"networkId": nic.NetworkID, "networkName": r.NetworkNames[i],
					"bridge": nic.Bridge, "mac": nic.Mac, "hostname": nic.Hostname} {
					if v != "" {
						m[resource.PropertyKey(k)] = resource.NewStringProperty(v)
					}
				}
				if nic.Mac == "" && i < len(macs) && macs[i] != "" {
					m["mac"] = resource.NewStringProperty(macs[i])
					filled = true
				}
				nics[i] = resource.NewObjectProperty(m)
			}
			if filled {
				outs["networkInterfaces"] = resource.NewArrayProperty(nics)
			}
		}
	}
	return uuid, outs, nil
}

func domainState(ctx context.Context, v virsh, id string) (string, error) {
	return v.run(ctx, "domstate", id)
}

// shutdownGrace is how long Delete lets a running guest shut down cleanly (ACPI power button)
// before it pulls the plug: a guest killed seconds after boot can lose what it had not yet
// flushed (cloud-init's SSH host keys, written files), which matters when its disk is reused.
var shutdownGrace = 30 * time.Second

// waitShutOff polls until the domain is shut off (true), it is gone (true), or timeout (false).
func waitShutOff(ctx context.Context, v virsh, id string, timeout time.Duration) (bool, error) {
	deadline := time.Now().Add(timeout)
	for {
		state, err := domainState(ctx, v, id)
		if err != nil {
			return isNotFound(err), ignore(err, isNotFound)
		}
		if state == "shut off" {
			return true, nil
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func deleteDomain(ctx context.Context, o *op, id string) error {
	state, err := domainState(ctx, o.v, id)
	if err != nil {
		return ignore(err, isNotFound)
	}
	if state != "shut off" {
		off := false
		if state == "running" && shutdownGrace > 0 {
			o.status(ctx, "shutting down (up to %s)", shutdownGrace)
			if _, err := o.v.run(ctx, "shutdown", id); err == nil {
				if off, err = waitShutOff(ctx, o.v, id, shutdownGrace); err != nil {
					return err
				}
			}
			o.status(ctx, "")
		}
		if !off {
			// destroy is a hard power-off; QEMU can take a moment to let go (retry), then wait, bounded.
			err := retry(ctx, time.Minute, func(err error) bool { return !isNotFound(err) }, func() error {
				_, err := o.v.run(ctx, "destroy", id)
				return ignore(err, isNotActive)
			})
			if err != nil {
				return ignore(err, isNotFound)
			}
			if off, err = waitShutOff(ctx, o.v, id, time.Minute); err != nil {
				return err
			}
			if !off {
				return fmt.Errorf("domain %s still not shut off a minute after `virsh destroy`", id)
			}
		}
	}
	_, err = o.v.run(ctx, "undefine", id)
	if err != nil && strings.Contains(virshStderr(err), "nvram") {
		_, err = o.v.run(ctx, "undefine", "--nvram", id)
	}
	return ignore(err, isNotFound)
}
