package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/digitalocean/go-libvirt"
	"github.com/google/uuid"
	"github.com/pulumi/pulumi/sdk/v3/go/common/diag"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"libvirt.org/go/libvirtxml"
)

// kind is one resource type: its inputs, defaults, checks and lifecycle.
type kind struct {
	newArgs  func() any
	required []string
	defaults map[string]resource.PropertyValue
	validate func(args any) error
	create   func(ctx context.Context, o *op, args any) (id string, outs resource.PropertyMap, err error)
	// adopt runs before create: a same-named object of this stack is taken over (found) or cleared for
	// create, any other one refused (adopt.go).
	adopt func(ctx context.Context, o *op, args any) (id string, outs resource.PropertyMap, found bool, err error)
	// read reports what libvirt holds now, as inputs would say it (nil: the object is gone).
	// olds are the stored inputs (empty on import).
	read   func(ctx context.Context, o *op, id string, olds resource.PropertyMap) (resource.PropertyMap, error)
	update func(ctx context.Context, o *op, id string, args any, changed []string) error
	delete func(ctx context.Context, o *op, id string) error
	// inPlace are the inputs Update changes without replacing the object (upstream's non-ForceNew
	// ones that it acts on); a change of any other input replaces it.
	inPlace       []string
	secretOutputs []string // outputs that are always secret
	// identity are the inputs that name the object in libvirt. A replacement that changes one of them
	// makes the new object beside the old one (the engine deletes the old one at the end: a new base
	// image stays until no overlay uses it); without them, or when they stay, the old one goes first.
	// Domains, networks and pools always go first: an overlay, a MAC, a subnet or a path is theirs alone.
	identity []string
}

// op is one call: the provider's connection and the resource's URN.
type op struct {
	p   *libvirtProvider
	l   *libvirt.Libvirt
	urn string
}

// status shows a transient message in the resource's Info column (never user-data); warn logs one.
func (o *op) status(ctx context.Context, format string, a ...any) {
	if o.p.host != nil {
		_ = o.p.host.LogStatus(ctx, diag.Info, resource.URN(o.urn), fmt.Sprintf(format, a...))
	}
}

func (o *op) warn(ctx context.Context, msg string) {
	if o.p.host != nil {
		_ = o.p.host.Log(ctx, diag.Warning, resource.URN(o.urn), msg)
	}
}

var kinds = map[string]*kind{
	"libvirt:index/network:Network": {
		newArgs:  func() any { return &networkArgs{} },
		required: []string{"name"},
		defaults: map[string]resource.PropertyValue{
			"mode": resource.NewStringProperty("nat"), "autostart": resource.NewBoolProperty(false)},
		validate: func(a any) error { _, err := networkDefinition(*a.(*networkArgs)); return err },
		create:   createNetwork,
		adopt:    adoptNetwork,
		read:     readNetwork,
		update:   updateNetwork,
		delete:   deleteNetwork,
		inPlace:  []string{"autostart", "dhcp"},
	},
	"libvirt:index/pool:Pool": {
		newArgs:  func() any { return &poolArgs{} },
		required: []string{"name", "type", "path"},
		validate: func(a any) error { _, err := poolDefinition(*a.(*poolArgs)); return err },
		create:   createPool,
		adopt:    adoptPool,
		read:     readPool,
		delete:   deletePool,
	},
	"libvirt:index/volume:Volume": {
		newArgs:  func() any { return &volumeArgs{} },
		required: []string{"name", "pool"},
		validate: validateVolume,
		create:   createVolume,
		adopt:    adoptVolume,
		read:     readVolume,
		update:   updateVolume,
		delete:   deleteVolume,
		inPlace:  []string{"size"},
		identity: []string{"name", "pool"},
	},
	"libvirt:index/cloudInitDisk:CloudInitDisk": {
		newArgs:       func() any { return &cloudInitArgs{} },
		required:      []string{"name", "pool"},
		create:        createCloudInit,
		adopt:         adoptCloudInit,
		read:          readCloudInit,
		update:        updateCloudInit,
		inPlace:       []string{"userData"},
		delete:        func(ctx context.Context, o *op, id string) error { return deleteVolume(ctx, o, cloudInitPath(id)) },
		secretOutputs: []string{"userData"},
		identity:      []string{"name", "pool"},
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
		adopt:    adoptDomain,
		read:     readDomain,
		update:   updateDomain,
		delete:   deleteDomain,
		inPlace:  []string{"running", "autostart", "memory", "vcpu"},
	},
}

// byUUID looks a domain, network or pool up by its id.
func byUUID[T any](id string, lookup func(libvirt.UUID) (T, error)) (T, error) {
	u, err := uuid.Parse(id)
	if err != nil {
		var none T
		return none, fmt.Errorf("id %q is not a libvirt UUID: %w", id, err)
	}
	return lookup(libvirt.UUID(u))
}

func uuidString(u libvirt.UUID) string { return uuid.UUID(u).String() }

func boolInt(b bool) int32 {
	if b {
		return 1
	}
	return 0
}

// props builds an observed PropertyMap from plain values (nil and "" are left out: unset).
func props(m map[string]any) resource.PropertyMap {
	out := resource.PropertyMap{}
	for k, v := range m {
		if v != nil && v != "" {
			out[resource.PropertyKey(k)] = resource.NewPropertyValue(v)
		}
	}
	return out
}

// applyXSLT runs the user's stylesheet over a generated document (xsltproc on this host).
func applyXSLT(ctx context.Context, doc interface{ Marshal() (string, error) }, xslt string) (string, error) {
	s, err := doc.Marshal()
	if err != nil || strings.TrimSpace(xslt) == "" {
		return s, err
	}
	style, err := os.CreateTemp("", "pulumi-libvirt-*.xsl")
	if err != nil {
		return "", err
	}
	defer os.Remove(style.Name())
	if _, err := style.WriteString(xslt); err != nil || style.Close() != nil {
		return "", fmt.Errorf("xml.xslt: writing %s: %v", style.Name(), err)
	}
	cmd := exec.CommandContext(ctx, "xsltproc", "--nonet", style.Name(), "-")
	cmd.Stdin = strings.NewReader(s)
	out, err := cmd.CombinedOutput()
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
	def, err := networkDefinition(a)
	if err == nil {
		err = markNetwork(o, def)
	}
	if err != nil {
		return "", nil, err
	}
	doc, err := applyXSLT(ctx, def, xsltOf(a.Xml))
	if err != nil {
		return "", nil, err
	}
	n, err := o.l.NetworkDefineXML(doc)
	if err != nil {
		return "", nil, err
	}
	id := uuidString(n.UUID)
	if err := o.l.NetworkCreate(n); err != nil {
		return "", nil, cleanup(ctx, o, id, deleteNetwork, err)
	}
	if err := o.l.NetworkSetAutostart(n, boolInt(a.Autostart)); err != nil {
		return "", nil, cleanup(ctx, o, id, deleteNetwork, err)
	}
	seen, _ := readNetwork(ctx, o, id, nil) // completes the outputs (the bridge libvirt chose)
	return id, seen, nil
}

// cleanup removes a half-made object and returns the error that stopped its creation. It outlives
// a cancelled request, so the object is still removed.
func cleanup(ctx context.Context, o *op, id string, del func(context.Context, *op, string) error, err error) error {
	c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	_ = del(c, o, id)
	return err
}

// parseXML parses what one of libvirt's XML getters returned into its libvirtxml struct.
func parseXML[T any, P interface {
	*T
	Unmarshal(string) error
}](doc string, err error) (*T, error) {
	x := P(new(T))
	if err == nil {
		err = x.Unmarshal(doc)
	}
	return x, err
}

func networkXML(l *libvirt.Libvirt, n libvirt.Network) (*libvirtxml.Network, error) {
	return parseXML[libvirtxml.Network](l.NetworkGetXMLDesc(n, 0))
}

func readNetwork(_ context.Context, o *op, id string, _ resource.PropertyMap) (resource.PropertyMap, error) {
	n, err := byUUID(id, o.l.NetworkLookupByUUID)
	if err != nil {
		return nil, ignore(err, isNotFound)
	}
	x, err := networkXML(o.l, n)
	if err != nil {
		return nil, err
	}
	auto, err := o.l.NetworkGetAutostart(n)
	if err != nil {
		return nil, err
	}
	mode, dhcp := "none", false
	if x.Forward != nil {
		mode = x.Forward.Mode
	}
	var addrs []string
	for _, ip := range x.IPs {
		if p, err := ipPrefix(ip); err == nil {
			addrs = append(addrs, p.Masked().String())
		}
		dhcp = dhcp || (ip.DHCP != nil && len(ip.DHCP.Ranges) > 0)
	}
	m := map[string]any{"name": x.Name, "mode": mode, "autostart": auto == 1, "addresses": addrs,
		"dhcp": map[string]any{"enabled": dhcp},
		"dns":  map[string]any{"enabled": x.DNS == nil || x.DNS.Enable != "no"}}
	if x.Bridge != nil {
		m["bridge"] = x.Bridge.Name
	}
	if x.Domain != nil {
		m["domain"] = x.Domain.Name
	}
	if x.MTU != nil {
		m["mtu"] = float64(x.MTU.Size)
	}
	return props(m), nil
}

func ipPrefix(ip libvirtxml.NetworkIP) (netip.Prefix, error) {
	return netip.ParsePrefix(fmt.Sprintf("%s/%d", ip.Address, ip.Prefix))
}

// updateNetwork (re)starts the network, as upstream does, and changes autostart and the DHCP
// ranges live (net-update), so the domains on it stay attached.
func updateNetwork(_ context.Context, o *op, id string, args any, changed []string) error {
	a := *args.(*networkArgs)
	n, err := byUUID(id, o.l.NetworkLookupByUUID)
	if err != nil {
		return err
	}
	if active, err := o.l.NetworkIsActive(n); err != nil {
		return err
	} else if active != 1 {
		if err := o.l.NetworkCreate(n); err != nil {
			return err
		}
	}
	if err := o.l.NetworkSetAutostart(n, boolInt(a.Autostart)); err != nil {
		return err
	}
	if !slices.Contains(changed, "dhcp") {
		return nil
	}
	x, err := networkXML(o.l, n)
	if err != nil {
		return err
	}
	for i, ip := range x.IPs {
		p, err := ipPrefix(ip)
		want := dhcpRange(p)
		if err != nil || want == nil {
			continue
		}
		cmd, ranges := libvirt.NetworkUpdateCommandAddLast, want.Ranges
		if !dhcpEnabled(a) {
			cmd, ranges = libvirt.NetworkUpdateCommandDelete, nil
			if ip.DHCP != nil {
				ranges = ip.DHCP.Ranges
			}
		} else if ip.DHCP != nil && len(ip.DHCP.Ranges) > 0 {
			continue // already served
		}
		for _, r := range ranges {
			doc := fmt.Sprintf("<range start='%s' end='%s'/>", r.Start, r.End)
			if err := o.l.NetworkUpdateCompat(n, cmd, libvirt.NetworkSectionIPDhcpRange, int32(i), doc,
				libvirt.NetworkUpdateAffectLive|libvirt.NetworkUpdateAffectConfig); err != nil {
				return fmt.Errorf("network %s: dhcp: %w", a.Name, err)
			}
		}
	}
	return nil
}

func deleteNetwork(_ context.Context, o *op, id string) error {
	n, err := byUUID(id, o.l.NetworkLookupByUUID)
	if err != nil {
		return ignore(err, isNotFound)
	}
	if err := o.l.NetworkDestroy(n); ignore(err, isNotFound, isNotActive) != nil {
		return err
	}
	return ignore(o.l.NetworkUndefine(n), isNotFound)
}

// ---- Pool ---------------------------------------------------------------------------------------

func createPool(ctx context.Context, o *op, args any) (string, resource.PropertyMap, error) {
	def, err := poolDefinition(*args.(*poolArgs))
	if err == nil {
		err = markPool(o, def)
	}
	if err != nil {
		return "", nil, err
	}
	doc, err := def.Marshal()
	if err != nil {
		return "", nil, err
	}
	p, err := o.l.StoragePoolDefineXML(doc, 0)
	if err != nil {
		return "", nil, err
	}
	id := uuidString(p.UUID)
	if err := o.l.StoragePoolBuild(p, 0); err != nil {
		return "", nil, cleanup(ctx, o, id, deletePool, err)
	}
	if err := o.l.StoragePoolCreate(p, 0); err != nil {
		return "", nil, cleanup(ctx, o, id, deletePool, err)
	}
	if err := o.l.StoragePoolSetAutostart(p, 1); err != nil {
		return "", nil, cleanup(ctx, o, id, deletePool, err)
	}
	return id, nil, nil
}

func readPool(_ context.Context, o *op, id string, _ resource.PropertyMap) (resource.PropertyMap, error) {
	p, err := byUUID(id, o.l.StoragePoolLookupByUUID)
	if err != nil {
		return nil, ignore(err, isNotFound)
	}
	x, err := parseXML[libvirtxml.StoragePool](o.l.StoragePoolGetXMLDesc(p, 0))
	if err != nil {
		return nil, err
	}
	m := map[string]any{"name": x.Name, "type": x.Type}
	if x.Target != nil {
		m["path"] = x.Target.Path
	}
	return props(m), nil
}

func deletePool(ctx context.Context, o *op, id string) error {
	p, err := byUUID(id, o.l.StoragePoolLookupByUUID)
	if err != nil {
		return ignore(err, isNotFound)
	}
	if err := o.l.StoragePoolDestroy(p); ignore(err, isNotFound, isNotActive) != nil {
		return err
	}
	// A dir pool's delete is an rmdir: it keeps a directory that still holds files.
	if err := o.l.StoragePoolDelete(p, 0); ignore(err, isNotFound) != nil {
		o.warn(ctx, fmt.Sprintf("pool directory kept: %v", err))
	}
	return ignore(o.l.StoragePoolUndefine(p), isNotFound)
}

// ---- Volume and CloudInitDisk -------------------------------------------------------------------

func validateVolume(args any) error {
	a := *args.(*volumeArgs)
	ways := len(slices.DeleteFunc([]string{a.Source, a.BaseVolumeID, a.BaseVolumeName}, func(s string) bool { return s == "" }))
	if ways > 1 {
		return fmt.Errorf("volume %q: give one of source, baseVolumeId, baseVolumeName", a.Name)
	}
	if ways == 0 && a.Size <= 0 {
		return fmt.Errorf("volume %q: give source, baseVolumeId, baseVolumeName or size", a.Name)
	}
	if a.BaseVolumeName != "" && a.BaseVolumePool == "" {
		return fmt.Errorf("volume %q: baseVolumeName needs baseVolumePool", a.Name)
	}
	if !slices.Contains([]string{"", "qcow2", "raw"}, a.Format) {
		return fmt.Errorf("volume %q: format %q is not supported (qcow2, raw)", a.Name, a.Format)
	}
	if (a.BaseVolumeID != "" || a.BaseVolumeName != "") && a.Format == "raw" {
		return fmt.Errorf("volume %q: an overlay over a base volume must be qcow2", a.Name)
	}
	return nil
}

// volumeByKey looks a volume up by its key (its id) and reads its definition.
func volumeByKey(l *libvirt.Libvirt, key string) (libvirt.StorageVol, *libvirtxml.StorageVolume, error) {
	v, err := l.StorageVolLookupByKey(key)
	if err != nil {
		return v, nil, err
	}
	x, err := parseXML[libvirtxml.StorageVolume](l.StorageVolGetXMLDesc(v, 0))
	if err != nil {
		return v, nil, err
	}
	if x.Target == nil {
		x.Target = &libvirtxml.StorageVolumeTarget{}
	}
	if x.Target.Format == nil {
		x.Target.Format = &libvirtxml.StorageVolumeTargetFormat{}
	}
	if x.Capacity == nil {
		x.Capacity = &libvirtxml.StorageVolumeSize{}
	}
	return v, x, nil
}

// source is a volume's content: a local file (path or file:// URL) or an http(s) download,
// streamed, of a known size.
type source struct {
	*bufio.Reader
	size   int64
	format string // qcow2 by its magic, raw otherwise
	close  func() error
}

// digestFragment is a source URL's stated content: #sha256=<64 lowercase hex digits>.
var digestFragment = regexp.MustCompile(`^sha256=([0-9a-f]{64})$`)

// openSource opens a volume's content. A download must state its sha256 in the URL's fragment (never
// sent to the server): it is fetched into a private temporary file (0600 in a 0700 directory, removed on
// close) and checked before a volume is made of it; a local file with a fragment is checked too.
func openSource(ctx context.Context, src string) (*source, error) {
	u, err := url.Parse(src)
	want := ""
	if err == nil && u.Fragment != "" {
		m := digestFragment.FindStringSubmatch(u.Fragment)
		if m == nil {
			return nil, fmt.Errorf("source %q: the fragment must be #sha256=<64 lowercase hex digits>", src)
		}
		want, u.Fragment, u.RawFragment = m[1], "", ""
	}
	switch {
	case err == nil && (u.Scheme == "http" || u.Scheme == "https"):
		if want == "" {
			return nil, fmt.Errorf("downloading %s: refused without its digest: add #sha256=<the file's sha256> to the URL", src)
		}
		path, cleanup, err := download(ctx, u.String(), want)
		if err != nil {
			return nil, err
		}
		s, err := openFile(path, "")
		if err != nil {
			cleanup()
			return nil, err
		}
		fileClose := s.close
		s.close = func() error { err := fileClose(); cleanup(); return err }
		return s, nil
	case err == nil && u.Scheme != "" && u.Scheme != "file":
		return nil, fmt.Errorf("source %q: scheme %q is not supported (path, file://, https:// with #sha256=)", src, u.Scheme)
	case err == nil && (u.Scheme == "file" || want != ""):
		return openFile(u.Path, want)
	default:
		return openFile(src, "")
	}
}

// openFile opens a local file as a source; with `want`, only when its sha256 is that.
func openFile(path, want string) (*source, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if want != "" {
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			f.Close()
			return nil, err
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != want {
			f.Close()
			return nil, fmt.Errorf("%s: sha256 %s, not the %s its location states: refused", path, got, want)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			f.Close()
			return nil, err
		}
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	s := &source{Reader: bufio.NewReader(f), size: st.Size(), format: "raw", close: f.Close}
	if magic, _ := s.Peek(4); string(magic) == "QFI\xfb" {
		s.format = "qcow2"
	}
	return s, nil
}

// download fetches `src` into a private temporary file and checks its sha256 against `want` on the way;
// the file's path and what removes it.
func download(ctx context.Context, src, want string) (string, func(), error) {
	dir, err := os.MkdirTemp("", "hacluster-download-") // 0700
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	fail := func(err error) (string, func(), error) { cleanup(); return "", nil, err }
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
	if err != nil {
		return fail(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fail(fmt.Errorf("downloading %s: %w", src, err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fail(fmt.Errorf("downloading %s: HTTP %s", src, resp.Status))
	}
	path := filepath.Join(dir, "content")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fail(err)
	}
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(f, h), resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fail(fmt.Errorf("downloading %s: %w", src, err))
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fail(fmt.Errorf("downloading %s: sha256 %s, not the %s the URL states: refused, no volume made of it", src, got, want))
	}
	return path, cleanup, nil
}

// createVolumeXML creates a volume in a pool (by name) from a definition and the user's XSLT.
func createVolumeXML(ctx context.Context, o *op, pool string, def *libvirtxml.StorageVolume, xslt string) (libvirt.StorageVol, error) {
	p, err := o.l.StoragePoolLookupByName(pool)
	if err != nil {
		return libvirt.StorageVol{}, err
	}
	doc, err := applyXSLT(ctx, def, xslt)
	if err != nil {
		return libvirt.StorageVol{}, err
	}
	return o.l.StorageVolCreateXML(p, doc, 0)
}

// uploadVolume creates volume `name` of the source's size in `format` and streams the source into it.
func uploadVolume(ctx context.Context, o *op, pool, name, format, src, xslt string) (libvirt.StorageVol, error) {
	s, err := openSource(ctx, src)
	if err != nil {
		return libvirt.StorageVol{}, fmt.Errorf("volume %q: %w", name, err)
	}
	defer s.close()
	def, _ := volumeDefinition(name, cmp.Or(format, s.format), uint64(s.size), "", "")
	v, err := createVolumeXML(ctx, o, pool, def, xslt)
	if err != nil {
		return v, err
	}
	o.status(ctx, "uploading %d MiB into %s/%s", s.size>>20, pool, name)
	err = o.l.StorageVolUpload(v, s, 0, uint64(s.size), 0)
	o.status(ctx, "")
	if err != nil {
		return v, cleanup(ctx, o, v.Key, deleteVolume, err)
	}
	return v, nil
}

func createVolume(ctx context.Context, o *op, args any) (string, resource.PropertyMap, error) {
	a := *args.(*volumeArgs)
	var v libvirt.StorageVol
	var def *libvirtxml.StorageVolume // created from a definition (an upload creates its own)
	switch {
	case a.BaseVolumeID != "" || a.BaseVolumeName != "":
		key := a.BaseVolumeID
		if key == "" { // by name: the key of the pool's volume
			p, err := o.l.StoragePoolLookupByName(a.BaseVolumePool)
			if err == nil {
				var base libvirt.StorageVol
				base, err = o.l.StorageVolLookupByName(p, a.BaseVolumeName)
				key = base.Key
			}
			if err != nil {
				return "", nil, fmt.Errorf("volume %q: base volume: %w", a.Name, err)
			}
		}
		_, bx, err := volumeByKey(o.l, key)
		if err != nil {
			return "", nil, fmt.Errorf("volume %q: base volume: %w", a.Name, err)
		}
		capacity := scaleSize(bx.Capacity.Unit, bx.Capacity.Value)
		if a.Size > 0 && uint64(a.Size) < capacity {
			return "", nil, fmt.Errorf("volume %q: size %s is smaller than its base volume's virtual size %s: an overlay "+
				"cannot be smaller than the image it starts from (set a size of at least %s, or none)",
				a.Name, bytesText(uint64(a.Size)), bytesText(capacity), bytesText(capacity))
		}
		capacity = max(capacity, uint64(a.Size))
		if def, err = volumeDefinition(a.Name, "qcow2", capacity, bx.Target.Path, bx.Target.Format.Type); err != nil {
			return "", nil, err
		}
	case a.Source != "":
		var err error
		if v, err = uploadVolume(ctx, o, a.Pool, a.Name, a.Format, a.Source, xsltOf(a.Xml)); err != nil {
			return "", nil, err
		}
		// libvirt knows the bytes now, not what they are: re-read the pool so a qcow2's virtual
		// size (from its header) becomes the volume's capacity. Waits out other uploads' jobs.
		p, err := o.l.StoragePoolLookupByName(a.Pool)
		if err == nil {
			err = retry(ctx, 30*time.Minute, isBusy, func() error { return o.l.StoragePoolRefresh(p, 0) })
		}
		if err != nil {
			return "", nil, err
		}
	default:
		def, _ = volumeDefinition(a.Name, cmp.Or(a.Format, "qcow2"), uint64(a.Size), "", "")
	}
	if def != nil {
		var err error
		if v, err = createVolumeXML(ctx, o, a.Pool, def, xsltOf(a.Xml)); err != nil {
			return "", nil, err
		}
	}
	outs, _ := readVolume(ctx, o, v.Key, nil) // completes the outputs (size, format)
	return v.Key, outs, nil
}

// readVolume: name, pool, size (capacity in bytes), format and backing store of a volume (id = key).
func readVolume(_ context.Context, o *op, id string, _ resource.PropertyMap) (resource.PropertyMap, error) {
	v, x, err := volumeByKey(o.l, id)
	if err != nil {
		return nil, ignore(err, isNotFound)
	}
	m := map[string]any{"name": v.Name, "pool": v.Pool, "size": float64(scaleSize(x.Capacity.Unit, x.Capacity.Value)),
		"format": x.Target.Format.Type}
	if x.BackingStore != nil {
		m["baseVolumeId"] = x.BackingStore.Path
	}
	return props(m), nil
}

// bytesText shows a size in bytes, and in GiB when it is whole GiB.
func bytesText(n uint64) string {
	if n > 0 && n%(1<<30) == 0 {
		return fmt.Sprintf("%d GiB (%d bytes)", n>>30, n)
	}
	return fmt.Sprintf("%d bytes", n)
}

// growTo decides what a volume of `capacity` bytes does for a requested size: grow (true), nothing
// (false: no size asked for, or the same), or refuse a shrink (it would cut the guest's filesystem).
func growTo(name string, capacity uint64, size int64) (bool, error) {
	switch {
	case size <= 0 || uint64(size) == capacity:
		return false, nil // unset: the volume keeps the size it has
	case uint64(size) < capacity:
		return false, fmt.Errorf("volume %q: size %s is smaller than its capacity %s: a volume only grows (shrinking "+
			"would cut the filesystem on it); set a size of at least %s", name, bytesText(uint64(size)),
			bytesText(capacity), bytesText(capacity))
	}
	return true, nil
}

// updateVolume grows a volume in place: same key, path and content (never replaced). The pool resizes it
// (virStorageVolResize: qemu-img resize for a qcow2). A running domain holds its disk open (and locked),
// so a disk of a running domain is grown while that domain is shut down: the domain is shut down cleanly
// (as for a vcpu or memory change), the volume grown and the domain started again, and the guest sees the
// new size from that boot on (the hacluster image grows its root filesystem at boot). Growing it live
// (virDomainBlockResize) would show the guest the bigger disk at once, but its filesystem would stay at
// the old size until the next boot anyway; the program drains a node before its volume changes.
func updateVolume(ctx context.Context, o *op, id string, args any, _ []string) error {
	a := *args.(*volumeArgs)
	v, x, err := volumeByKey(o.l, id)
	if err != nil {
		return fmt.Errorf("volume %q: %w", a.Name, err)
	}
	grow, err := growTo(a.Name, scaleSize(x.Capacity.Unit, x.Capacity.Value), a.Size)
	if err != nil || !grow {
		return err
	}
	users, err := runningWithDisk(o.l, v.Key, x.Target.Path)
	if err != nil {
		return fmt.Errorf("volume %q: finding the running domains that use it: %w", a.Name, err)
	}
	why := fmt.Sprintf("restarting to grow its disk %s to %s: ", a.Name, bytesText(uint64(a.Size)))
	grown := false
	return growStopped(users,
		func(d libvirt.Domain) error { return stopDomain(ctx, o, d, why) },
		func() error {
			o.status(ctx, "growing %s to %s", a.Name, bytesText(uint64(a.Size)))
			defer o.status(ctx, "")
			err := retry(ctx, 2*time.Minute, isBusy, func() error { return o.l.StorageVolResize(v, uint64(a.Size), 0) })
			if err != nil {
				return fmt.Errorf("volume %q: growing to %s: %w", a.Name, bytesText(uint64(a.Size)), err)
			}
			grown = true
			return nil
		},
		func(d libvirt.Domain) error {
			if grown {
				// Left off for the domain's own update to start (the engine refreshes it next and reads it
				// stopped), which applies a memory or vCPU change in the same restart: a guest started here
				// and stopped again by that update a moment later is cut off mid-boot, in the middle of
				// growing its filesystem. Started here anyway when no update comes (startLater).
				startLater(o.l, d, leftOffFor)
				return nil
			}
			if err := o.l.DomainCreate(d); err != nil {
				return fmt.Errorf("volume %q: domain %s did not start again: %w", a.Name, d.Name, err)
			}
			return nil
		})
}

// leftOffFor is how long a domain stopped for a disk grow waits for its own update before the plugin
// starts it by itself.
var leftOffFor = 20 * time.Second

// leftOff holds the domains (by UUID) a disk grow left stopped, each with what starts it later.
var leftOff = struct {
	sync.Mutex
	m map[libvirt.UUID]*time.Timer
}{m: map[libvirt.UUID]*time.Timer{}}

// startLater starts `d` after `after` unless its update (claimLeftOff) takes it first.
func startLater(l *libvirt.Libvirt, d libvirt.Domain, after time.Duration) {
	leftOff.Lock()
	defer leftOff.Unlock()
	if t := leftOff.m[d.UUID]; t != nil {
		t.Stop()
	}
	leftOff.m[d.UUID] = time.AfterFunc(after, func() {
		if claimLeftOff(d.UUID) {
			_ = ignore(l.DomainCreate(d), isNotFound)
		}
	})
}

// claimLeftOff: whether `id` was left stopped by a disk grow (and no longer is pending: the caller starts it).
func claimLeftOff(id libvirt.UUID) bool {
	leftOff.Lock()
	defer leftOff.Unlock()
	t, ok := leftOff.m[id]
	if ok {
		t.Stop()
		delete(leftOff.m, id)
	}
	return ok
}

// growStopped resizes (grow) while the running domains `users` are stopped: each is stopped in turn,
// and every one that was stopped is started again, whether the resize worked or not (the first error
// is returned). A domain that does not stop leaves the volume as it is.
func growStopped[D any](users []D, stop func(D) error, grow func() error, start func(D) error) error {
	var err error
	var stopped []D
	for _, d := range users {
		if err = stop(d); err != nil {
			break
		}
		stopped = append(stopped, d)
	}
	if err == nil {
		err = grow()
	}
	for _, d := range stopped {
		if e := start(d); e != nil && err == nil {
			err = e
		}
	}
	return err
}

// runningWithDisk: the running domains with a disk whose source is the volume (by key or path).
func runningWithDisk(l *libvirt.Libvirt, key, path string) ([]libvirt.Domain, error) {
	doms, _, err := l.ConnectListAllDomains(1, libvirt.ConnectListDomainsActive)
	if err != nil {
		return nil, err
	}
	var users []libvirt.Domain
	for _, d := range doms {
		x, err := parseXML[libvirtxml.Domain](l.DomainGetXMLDesc(d, 0))
		if err != nil {
			if isNotFound(err) {
				continue // gone since the listing
			}
			return nil, err
		}
		if x.Devices != nil && slices.ContainsFunc(x.Devices.Disks, func(disk libvirtxml.DomainDisk) bool {
			return disk.Source != nil && disk.Source.File != nil && disk.Source.File.File != "" &&
				(disk.Source.File.File == key || disk.Source.File.File == path)
		}) {
			users = append(users, d)
		}
	}
	return users, nil
}

func deleteVolume(ctx context.Context, o *op, id string) error {
	v, err := o.l.StorageVolLookupByKey(id)
	if err != nil {
		return ignore(err, isNotFound)
	}
	if users, err := overlaysOf(o.l, v); err != nil || len(users) > 0 {
		if err != nil {
			return err
		}
		return fmt.Errorf("volume %s is still the base of %s: it is deleted once no overlay uses it (run pulumi up "+
			"again after they moved)", v.Name, strings.Join(users, ", "))
	}
	return retry(ctx, 2*time.Minute, isBusy, func() error { return ignore(o.l.StorageVolDelete(v, 0), isNotFound) })
}

// overlaysOf names the volumes of v's pool whose backing store is v (a base image still in use).
func overlaysOf(l *libvirt.Libvirt, v libvirt.StorageVol) ([]string, error) {
	p, err := l.StoragePoolLookupByName(v.Pool)
	if err != nil {
		return nil, ignore(err, isNotFound)
	}
	vols, _, err := l.StoragePoolListAllVolumes(p, 1, 0)
	if err != nil {
		return nil, err
	}
	var users []string
	for _, other := range vols {
		if other.Key == v.Key {
			continue
		}
		if _, x, err := volumeByKey(l, other.Key); err == nil && x.BackingStore != nil && x.BackingStore.Path == v.Key {
			users = append(users, other.Name)
		}
	}
	slices.Sort(users)
	return users, nil
}

func createCloudInit(ctx context.Context, o *op, args any) (string, resource.PropertyMap, error) {
	a := *args.(*cloudInitArgs)
	v, err := uploadSeed(ctx, o, a)
	if err != nil {
		return "", nil, err
	}
	// Upstream's id: the volume key and a random UUID.
	return v.Key + ";" + uuid.NewString(), nil, nil
}

// updateCloudInit writes a new user-data into the seed in place: same name, path and id, so the domain
// that has it attached stays as it is. A guest reads its seed at its first boot only; the new one is
// for the next fresh boot of the node (a running QEMU keeps the old file open until then).
func updateCloudInit(ctx context.Context, o *op, id string, args any, _ []string) error {
	if err := deleteVolume(ctx, o, cloudInitPath(id)); err != nil {
		return err
	}
	v, err := uploadSeed(ctx, o, *args.(*cloudInitArgs))
	if err == nil && v.Key != cloudInitPath(id) {
		err = fmt.Errorf("seed %s: rewritten at %s, not at %s", v.Name, v.Key, cloudInitPath(id))
	}
	return err
}

// uploadSeed makes the NoCloud ISO (user-data, meta-data, network-config) and uploads it as a volume.
func uploadSeed(ctx context.Context, o *op, a cloudInitArgs) (libvirt.StorageVol, error) {
	dir, err := os.MkdirTemp("", "pulumi-libvirt-cloudinit-") // 0700: user-data is a secret
	if err != nil {
		return libvirt.StorageVol{}, err
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
			return libvirt.StorageVol{}, err
		}
	}
	iso := filepath.Join(dir, "seed.iso")
	cmd := exec.CommandContext(ctx, "mkisofs", append([]string{"-output", iso, "-volid", "cidata", "-joliet", "-rock"}, files...)...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return libvirt.StorageVol{}, fmt.Errorf("mkisofs: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return uploadVolume(ctx, o, a.Pool, a.Name, "raw", iso, "")
}

func readCloudInit(_ context.Context, o *op, id string, _ resource.PropertyMap) (resource.PropertyMap, error) {
	v, err := o.l.StorageVolLookupByKey(cloudInitPath(id))
	if err != nil {
		return nil, ignore(err, isNotFound)
	}
	return props(map[string]any{"name": v.Name, "pool": v.Pool}), nil
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
	_, err := domainDefinition(a, resolvedDomain{})
	return err
}

func createDomain(ctx context.Context, o *op, args any) (string, resource.PropertyMap, error) {
	a := *args.(*domainArgs)
	var r resolvedDomain
	for i, d := range a.Disks {
		format := ""
		if d.VolumeID != "" {
			_, x, err := volumeByKey(o.l, d.VolumeID)
			if err != nil {
				return "", nil, fmt.Errorf("disks[%d].volumeId: %w", i, err)
			}
			format = x.Target.Format.Type
		}
		r.DiskFormats = append(r.DiskFormats, format)
	}
	for i, nic := range a.NetworkInterfaces {
		name := nic.NetworkName
		if nic.NetworkID != "" {
			n, err := byUUID(nic.NetworkID, o.l.NetworkLookupByUUID)
			if err != nil {
				return "", nil, fmt.Errorf("networkInterfaces[%d].networkId: %w", i, err)
			}
			name = n.Name
		}
		r.NetworkNames = append(r.NetworkNames, name)
	}
	def, err := domainDefinition(a, r)
	if err == nil {
		err = markDomain(o, def)
	}
	if err != nil {
		return "", nil, err
	}
	doc, err := applyXSLT(ctx, def, xsltOf(a.Xml))
	if err != nil {
		return "", nil, err
	}
	d, err := o.l.DomainDefineXMLFlags(doc, 0)
	if err != nil {
		return "", nil, err
	}
	id := uuidString(d.UUID)
	if a.Running == nil || *a.Running {
		if err := o.l.DomainCreate(d); err != nil {
			return "", nil, cleanup(ctx, o, id, deleteDomain, err)
		}
	}
	if err := o.l.DomainSetAutostart(d, boolInt(a.Autostart)); err != nil {
		return "", nil, cleanup(ctx, o, id, deleteDomain, err)
	}
	seen, _ := readDomain(ctx, o, id, nil) // completes the outputs (the MACs libvirt chose)
	return id, seen, nil
}

func domainRunning(l *libvirt.Libvirt, d libvirt.Domain) (bool, error) {
	state, _, err := l.DomainGetState(d, 0)
	s := libvirt.DomainState(state)
	return err == nil && s != libvirt.DomainShutoff && s != libvirt.DomainCrashed, err
}

// readDomain: what the domain's persistent definition, state and autostart flag say.
func readDomain(_ context.Context, o *op, id string, olds resource.PropertyMap) (resource.PropertyMap, error) {
	d, err := byUUID(id, o.l.DomainLookupByUUID)
	if err != nil {
		return nil, ignore(err, isNotFound)
	}
	x, err := parseXML[libvirtxml.Domain](o.l.DomainGetXMLDesc(d, libvirt.DomainXMLInactive))
	if err != nil {
		return nil, err
	}
	running, err := domainRunning(o.l, d)
	if err != nil {
		return nil, err
	}
	auto, err := o.l.DomainGetAutostart(d)
	if err != nil {
		return nil, err
	}
	m := map[string]any{"name": x.Name, "type": x.Type, "running": running, "autostart": auto == 1,
		"description": x.Description}
	if x.VCPU != nil {
		m["vcpu"] = float64(x.VCPU.Value)
	}
	if x.Memory != nil {
		m["memory"] = float64(scaleSize(x.Memory.Unit, uint64(x.Memory.Value)) >> 20)
	}
	if x.OS != nil {
		m["kernel"], m["initrd"] = x.OS.Kernel, x.OS.Initrd
	}
	disks := []any{}
	dev := x.Devices
	if dev == nil {
		dev = &libvirtxml.DomainDeviceList{}
	}
	for _, disk := range dev.Disks {
		switch {
		case disk.Source == nil:
		case disk.Target != nil && disk.Target.Dev == cloudInitTarget && disk.Source.File != nil:
			m["cloudinit"] = disk.Source.File.File
			// the seed id has a random part libvirt does not know: keep the stored one when it names this ISO
			if old := olds["cloudinit"]; old.IsString() && cloudInitPath(old.StringValue()) == disk.Source.File.File {
				m["cloudinit"] = old.StringValue()
			}
		case disk.Source.Block != nil:
			disks = append(disks, map[string]any{"blockDevice": disk.Source.Block.Dev})
		case disk.Source.File != nil && disk.Device == "cdrom":
			disks = append(disks, map[string]any{"file": disk.Source.File.File})
		case disk.Source.File != nil:
			disks = append(disks, map[string]any{"volumeId": disk.Source.File.File})
		}
	}
	m["disks"] = disks
	nics := []any{}
	for _, nic := range dev.Interfaces {
		n := map[string]any{}
		if nic.MAC != nil {
			n["mac"] = nic.MAC.Address
		}
		if s := nic.Source; s != nil && s.Network != nil {
			n["networkName"] = s.Network.Network
			if net, err := o.l.NetworkLookupByName(s.Network.Network); err == nil {
				n["networkId"] = uuidString(net.UUID)
			}
		} else if s != nil && s.Bridge != nil {
			n["bridge"] = s.Bridge.Bridge
		}
		nics = append(nics, n)
	}
	m["networkInterfaces"] = nics
	return props(m), nil
}

// updateDomain changes memory and vcpu in the persistent definition (same UUID, MACs, disks) and,
// as they apply from a boot, restarts a running domain cleanly; then running and autostart (a
// stopped domain is started again).
func updateDomain(ctx context.Context, o *op, id string, args any, changed []string) error {
	a := *args.(*domainArgs)
	d, err := byUUID(id, o.l.DomainLookupByUUID)
	if err != nil {
		return err
	}
	claimLeftOff(d.UUID) // a disk grow left it stopped: started below, with this update's changes
	resized := ""
	if slices.Contains(changed, "memory") || slices.Contains(changed, "vcpu") {
		if resized, err = resizeDomain(o.l, d, a); err != nil {
			return fmt.Errorf("domain %s: %w", a.Name, err)
		}
	}
	running, err := domainRunning(o.l, d)
	if err != nil {
		return err
	}
	want := a.Running == nil || *a.Running
	if resized != "" && running && want {
		why := "restarting for " + resized + ": "
		if err := stopDomain(ctx, o, d, why); err != nil {
			return err
		}
		o.status(ctx, "%sstarting", why)
		defer o.status(ctx, "")
		running = false
	}
	switch {
	case want && !running:
		err = o.l.DomainCreate(d)
	case !want:
		err = stopDomain(ctx, o, d, "")
	}
	if err != nil {
		return err
	}
	return o.l.DomainSetAutostart(d, boolInt(a.Autostart))
}

// resizeDomain redefines the domain from its own inactive XML (so all else, the XSLT's changes
// included, stays as libvirt holds it) with a's memory and vcpu; it says what changed.
func resizeDomain(l *libvirt.Libvirt, d libvirt.Domain, a domainArgs) (string, error) {
	x, err := parseXML[libvirtxml.Domain](l.DomainGetXMLDesc(d, libvirt.DomainXMLInactive))
	if err != nil {
		return "", err
	}
	what := resizeDefinition(x, uint(cmp.Or(a.Memory, 512)), uint(cmp.Or(a.Vcpu, 1)))
	if what == "" {
		return "", nil
	}
	doc, err := x.Marshal()
	if err == nil {
		_, err = l.DomainDefineXMLFlags(doc, 0)
	}
	return what, err
}

// shutdownGrace is how long a running guest may shut down cleanly before it is powered off hard:
// a guest killed seconds after boot can lose what it had not yet flushed (cloud-init's SSH host
// keys, written files), which matters when its disk is reused.
var shutdownGrace = 30 * time.Second

// waitShutOff polls until the domain is shut off or gone (true), or timeout (false).
func waitShutOff(ctx context.Context, l *libvirt.Libvirt, d libvirt.Domain, timeout time.Duration) (bool, error) {
	deadline := time.Now().Add(timeout)
	for {
		running, err := domainRunning(l, d)
		if err != nil || !running {
			return true, ignore(err, isNotFound)
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

// askAgain is how often a guest that is still running is asked again within the grace: one that is
// early in its boot (started a moment ago) misses an ACPI press made before systemd-logind runs, and
// has no agent yet; a later press can shut it down cleanly. (A disk grow no longer restarts a guest
// right before its memory/vCPU restart: it leaves it stopped for that update, startLater.)
var askAgain = 3 * time.Second

// shutDownWithin asks (ask) every `every` until the guest is off (off: waits up to the given time) or
// `grace` is over: whether it went off. An ask may block (an agent call lasts until the guest is off):
// each runs on its own, bounded by the grace.
func shutDownWithin(ctx context.Context, grace, every time.Duration, ask func() error,
	off func(time.Duration) (bool, error)) (bool, error) {
	deadline := time.Now().Add(grace)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return false, nil
		}
		asked := make(chan error, 1)
		go func() { asked <- ask() }()
		wait := min(every, left)
		select {
		case <-asked:
		case <-time.After(wait):
		case <-ctx.Done():
			return false, ctx.Err()
		}
		if done, err := off(min(every, time.Until(deadline))); done || err != nil {
			return done, err
		}
	}
}

// shutdowner is the part of the libvirt API that asks a guest to shut down (faked in tests).
type shutdowner interface {
	DomainShutdownFlags(libvirt.Domain, libvirt.DomainShutdownFlagValues) error
	DomainShutdown(libvirt.Domain) error
}

// askShutdown asks the guest to shut down: through its agent first (the guest's own poweroff, which
// works where ACPI is ignored, e.g. early in boot), else by the ACPI power button where no agent
// answers (a plain shutdown for drivers that take no flags).
func askShutdown(l shutdowner, d libvirt.Domain) error {
	if l.DomainShutdownFlags(d, libvirt.DomainShutdownGuestAgent) == nil {
		return nil
	}
	if l.DomainShutdownFlags(d, libvirt.DomainShutdownAcpiPowerBtn) == nil {
		return nil
	}
	return l.DomainShutdown(d)
}

// stopDomain: a clean shutdown (askShutdown) for up to shutdownGrace, then a hard power-off (if it
// runs at all). The grace bounds the request too (an agent call can block until the guest is off).
// why, when set, leads the status lines ("restarting for ...: ").
func stopDomain(ctx context.Context, o *op, d libvirt.Domain, why string) error {
	if running, err := domainRunning(o.l, d); err != nil || !running {
		return err
	}
	defer o.status(ctx, "")
	if shutdownGrace > 0 {
		o.status(ctx, "%sshutting down (up to %s)", why, shutdownGrace)
		off, err := shutDownWithin(ctx, shutdownGrace, askAgain,
			func() error { return askShutdown(o.l, d) },
			func(t time.Duration) (bool, error) { return waitShutOff(ctx, o.l, d, t) })
		if off || err != nil {
			return err
		}
		o.status(ctx, "%spowering off (not shut down in %s)", why, shutdownGrace)
	}
	// destroy is a hard power-off; QEMU can take a moment to let go (retry), then wait, bounded.
	err := retry(ctx, time.Minute, func(err error) bool { return !isNotFound(err) }, func() error {
		return ignore(o.l.DomainDestroy(d), isNotActive)
	})
	if err != nil {
		return ignore(err, isNotFound)
	}
	if off, err := waitShutOff(ctx, o.l, d, time.Minute); err != nil || !off {
		return fmt.Errorf("domain %s still not shut off a minute after a hard power-off (%v)", d.Name, err)
	}
	return nil
}

func deleteDomain(ctx context.Context, o *op, id string) error {
	d, err := byUUID(id, o.l.DomainLookupByUUID)
	if err != nil {
		return ignore(err, isNotFound)
	}
	claimLeftOff(d.UUID) // not to be started again
	if err := stopDomain(ctx, o, d, ""); err != nil {
		return ignore(err, isNotFound)
	}
	return ignore(o.l.DomainUndefineFlags(d, libvirt.DomainUndefineNvram), isNotFound)
}
