package main

import (
	"fmt"
	"strings"
	"testing"

	"libvirt.org/go/libvirtxml"
)

func TestRenderCmdline(t *testing.T) {
	cases := []struct {
		in   []map[string]string
		want string
	}{
		{[]map[string]string{{"root": "/dev/vda", "console": "ttyS0", "net.ifnames": "0"}, {"_": "rw"}},
			"console=ttyS0 net.ifnames=0 root=/dev/vda rw"},
		{[]map[string]string{{"_": "quiet", "a": "1"}, {"b": "2"}}, "quiet a=1 b=2"},
		{nil, ""},
		{[]map[string]string{{}}, ""},
	}
	for _, c := range cases {
		if got := renderCmdline(c.in); got != c.want {
			t.Errorf("renderCmdline(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestDiskTarget(t *testing.T) {
	for i, want := range map[int]string{0: "vda", 1: "vdb", 25: "vdz", 26: "vdaa", 27: "vdab", 701: "vdzz"} {
		if got := diskTarget("vd", i); got != want {
			t.Errorf("diskTarget(%d) = %q, want %q", i, got, want)
		}
	}
}

func clusterDomain() domainArgs {
	running := true
	return domainArgs{
		Name: "dev-web01", Type: "qemu", Vcpu: 1, Memory: 512,
		Cloudinit: "/var/lib/libvirt/hacluster/dev/dev-web01-seed.iso",
		Disks:     []diskArgs{{VolumeID: "/var/lib/libvirt/hacluster/dev/dev-web01.qcow2"}},
		NetworkInterfaces: []nicArgs{{NetworkID: "0b1c8a2e-0000-4000-8000-000000000001",
			Mac: "52:54:00:A8:5F:E6", Hostname: "web01"}},
		Consoles: []consoleArgs{{Type: "pty", TargetPort: "0", TargetType: "serial"}},
		Kernel:   "/var/lib/libvirt/hacluster/dev/dev-kernel",
		Initrd:   "/var/lib/libvirt/hacluster/dev/dev-initrd",
		Cmdlines: []map[string]string{{"root": "/dev/vda", "console": "ttyS0", "net.ifnames": "0"}, {"_": "rw"}},
		Running:  &running,
	}
}

func mustDomain(t *testing.T, a domainArgs, r resolvedDomain) *libvirtxml.Domain {
	t.Helper()
	def, err := domainDefinition(a, r)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := def.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	d := &libvirtxml.Domain{}
	if err := d.Unmarshal(doc); err != nil {
		t.Fatalf("generated XML does not parse: %v\n%s", err, doc)
	}
	return d
}

func diskLine(x libvirtxml.DomainDisk) string {
	src := ""
	if x.Source.File != nil {
		src = x.Source.File.File
	}
	return fmt.Sprintf("%s:%s:%s:%s:%s:ro=%v", x.Device, x.Target.Dev, x.Target.Bus, x.Driver.Type, src, x.ReadOnly != nil)
}

func TestDomainDefinition(t *testing.T) {
	d := mustDomain(t, clusterDomain(), resolvedDomain{DiskFormats: []string{"qcow2"}, NetworkNames: []string{"hacluster-dev"}})

	if d.Type != "qemu" || d.Name != "dev-web01" || d.VCPU.Value != 1 || d.Memory.Value != 512 || d.Memory.Unit != "MiB" {
		t.Errorf("header: %+v", d)
	}
	if d.OS.Type.Machine != "" || d.OS.Type.Type != "hvm" {
		t.Errorf("machine type must stay libvirt's default (pc: IDE for the seed): %+v", d.OS.Type)
	}
	if d.OS.Kernel != "/var/lib/libvirt/hacluster/dev/dev-kernel" || d.OS.Initrd != "/var/lib/libvirt/hacluster/dev/dev-initrd" ||
		d.OS.Cmdline != "console=ttyS0 net.ifnames=0 root=/dev/vda rw" {
		t.Errorf("direct kernel boot: %+v", d.OS)
	}
	if d.Features == nil || d.Features.ACPI == nil || d.Features.APIC == nil {
		t.Errorf("features: %+v", d.Features)
	}
	if len(d.Devices.Disks) != 2 {
		t.Fatalf("disks: %+v", d.Devices.Disks)
	}
	if got := diskLine(d.Devices.Disks[0]); got != "disk:vda:virtio:qcow2:/var/lib/libvirt/hacluster/dev/dev-web01.qcow2:ro=false" {
		t.Errorf("root disk: %s", got)
	}
	if got := diskLine(d.Devices.Disks[1]); got != "cdrom:hdd:ide:raw:/var/lib/libvirt/hacluster/dev/dev-web01-seed.iso:ro=true" {
		t.Errorf("cloud-init cdrom: %s", got)
	}
	if len(d.Devices.Interfaces) != 1 {
		t.Fatalf("interfaces: %+v", d.Devices.Interfaces)
	}
	nic := d.Devices.Interfaces[0]
	if nic.Source.Network == nil || nic.Source.Network.Network != "hacluster-dev" || nic.Model.Type != "virtio" ||
		nic.MAC == nil || nic.MAC.Address != "52:54:00:a8:5f:e6" {
		t.Errorf("nic: %+v", nic)
	}
	if s := d.Devices.Serials; len(s) != 1 || s[0].Source.Pty == nil || *s[0].Target.Port != 0 {
		t.Errorf("serial: %+v", s)
	}
	if c := d.Devices.Consoles; len(c) != 1 || c[0].Target.Type != "serial" || *c[0].Target.Port != 0 {
		t.Errorf("console: %+v", c)
	}
	if c := d.Devices.Channels; len(c) != 1 || c[0].Target.VirtIO.Name != "org.qemu.guest_agent.0" {
		t.Errorf("guest agent channel: %+v", c)
	}
	if len(d.Devices.RNGs) != 1 || d.Devices.RNGs[0].Model != "virtio" {
		t.Errorf("rng: %+v", d.Devices.RNGs)
	}
}

func TestDomainDefinitionVariants(t *testing.T) {
	a := clusterDomain()
	a.Type = ""
	a.Vcpu, a.Memory = 0, 0
	a.Cloudinit = "/pool/seed.iso;c0ffee" // upstream's "path;uuid" id form
	a.Disks = append(a.Disks, diskArgs{VolumeID: "/pool/data.raw"}, diskArgs{File: "/isos/tools.iso"})
	a.NetworkInterfaces = []nicArgs{{Bridge: "br0"}}
	a.Kernel, a.Initrd, a.Cmdlines = "", "", nil
	d := mustDomain(t, a, resolvedDomain{DiskFormats: []string{"", "raw", ""}})

	if d.Type != "kvm" || d.VCPU.Value != 1 || d.Memory.Value != 512 {
		t.Errorf("defaults: type %q vcpu %d memory %d", d.Type, d.VCPU.Value, d.Memory.Value)
	}
	if d.OS.Kernel != "" || d.OS.Cmdline != "" {
		t.Errorf("no kernel boot expected: %+v", d.OS)
	}
	got := []string{}
	for _, x := range d.Devices.Disks {
		got = append(got, diskLine(x))
	}
	want := []string{
		"disk:vda:virtio:qcow2:/var/lib/libvirt/hacluster/dev/dev-web01.qcow2:ro=false", // format unknown -> qcow2
		"disk:vdb:virtio:raw:/pool/data.raw:ro=false",
		"cdrom:hdc:ide:raw:/isos/tools.iso:ro=true",
		"cdrom:hdd:ide:raw:/pool/seed.iso:ro=true",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("disks:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	nic := d.Devices.Interfaces[0]
	if nic.Source.Bridge == nil || nic.Source.Bridge.Bridge != "br0" || nic.MAC != nil {
		t.Errorf("bridge nic: %+v", nic)
	}
}

func TestDomainDefinitionErrors(t *testing.T) {
	for name, mutate := range map[string]func(*domainArgs){
		"bad type":      func(a *domainArgs) { a.Type = "xen" },
		"nic no target": func(a *domainArgs) { a.NetworkInterfaces = []nicArgs{{Mac: "52:54:00:00:00:01"}} },
		"bad mac":       func(a *domainArgs) { a.NetworkInterfaces[0].Mac = "nope" },
		"empty disk":    func(a *domainArgs) { a.Disks = []diskArgs{{}} },
		"console type":  func(a *domainArgs) { a.Consoles[0].Type = "tcp" },
		"console port":  func(a *domainArgs) { a.Consoles[0].TargetPort = "x" },
	} {
		a := clusterDomain()
		mutate(&a)
		if _, err := domainDefinition(a, resolvedDomain{}); err == nil {
			t.Errorf("%s: expected an error", name)
		}
	}
}

func TestNetworkDefinition(t *testing.T) {
	off := false
	n, err := networkDefinition(networkArgs{Name: "hacluster-dev", Mode: "nat",
		Addresses: []string{"192.168.95.0/24"}, Dhcp: &dhcpArgs{Enabled: &off}})
	if err != nil {
		t.Fatal(err)
	}
	if n.Forward == nil || n.Forward.Mode != "nat" || n.Bridge == nil || n.Bridge.STP != "on" {
		t.Errorf("forward/bridge: %+v", n)
	}
	if len(n.IPs) != 1 || n.IPs[0].Address != "192.168.95.1" || n.IPs[0].Prefix != 24 || n.IPs[0].DHCP != nil {
		t.Errorf("ip (first host address, no dhcp): %+v", n.IPs)
	}

	n, err = networkDefinition(networkArgs{Name: "n", Mode: "none", Addresses: []string{"10.1.2.64/26", "fd00:1::/64"}})
	if err != nil {
		t.Fatal(err)
	}
	if n.Forward != nil {
		t.Errorf("mode none is isolated (no <forward>): %+v", n.Forward)
	}
	if n.IPs[0].Address != "10.1.2.65" || n.IPs[0].DHCP == nil ||
		n.IPs[0].DHCP.Ranges[0].Start != "10.1.2.66" || n.IPs[0].DHCP.Ranges[0].End != "10.1.2.126" {
		t.Errorf("ipv4 with default dhcp: %+v", n.IPs[0])
	}
	if n.IPs[1].Family != "ipv6" || n.IPs[1].Address != "fd00:1::1" || n.IPs[1].Prefix != 64 || n.IPs[1].DHCP != nil {
		t.Errorf("ipv6: %+v", n.IPs[1])
	}

	for _, bad := range []networkArgs{
		{Name: "x", Mode: "vepa"},
		{Name: "x", Addresses: []string{"192.168.1.300/24"}},
		{Name: "x", Mode: "bridge"},
	} {
		if _, err := networkDefinition(bad); err == nil {
			t.Errorf("%+v: expected an error", bad)
		}
	}
}

func TestVolumeAndPoolDefinitions(t *testing.T) {
	v, err := volumeDefinition("dev-web01.qcow2", "qcow2", 2147483648, "/pool/dev-base", "qcow2")
	if err != nil {
		t.Fatal(err)
	}
	doc, _ := v.Marshal()
	for _, want := range []string{`<capacity unit="bytes">2147483648</capacity>`, `<format type="qcow2"></format>`,
		`<backingStore>`, `<path>/pool/dev-base</path>`, `<mode>0600</mode>`} {
		if !strings.Contains(doc, want) {
			t.Errorf("overlay volume lacks %s:\n%s", want, doc)
		}
	}
	if _, err := volumeDefinition("x", "raw", 1, "/pool/base", "qcow2"); err == nil {
		t.Error("a raw overlay must be refused")
	}
	p, err := poolDefinition(poolArgs{Name: "hacluster-dev", Type: "dir", Path: "/var/lib/libvirt/hacluster/dev"})
	if err != nil {
		t.Fatal(err)
	}
	if doc, _ := p.Marshal(); !strings.Contains(doc, "<mode>0711</mode>") || !strings.Contains(doc, `<pool type="dir">`) {
		t.Errorf("pool: %s", doc)
	}
	if _, err := poolDefinition(poolArgs{Name: "x", Type: "logical", Path: "/x"}); err == nil {
		t.Error("non-dir pool must be refused")
	}
	if scaleSize("KiB", 524288)>>20 != 512 || scaleSize("bytes", 7) != 7 {
		t.Error("scaleSize")
	}
}

func TestResizeDefinition(t *testing.T) {
	d := mustDomain(t, clusterDomain(), resolvedDomain{})
	d.UUID = "0b1c8a2e-0000-4000-8000-0000000000aa"
	d.Memory = &libvirtxml.DomainMemory{Unit: "KiB", Value: 524288, DumpCore: "off"} // as libvirt reports it
	d.CurrentMemory = &libvirtxml.DomainCurrentMemory{Unit: "KiB", Value: 524288}
	d.VCPU = &libvirtxml.DomainVCPU{Placement: "static", Value: 1}
	if what := resizeDefinition(d, 512, 1); what != "" {
		t.Errorf("unchanged size: %q", what)
	}
	if what := resizeDefinition(d, 640, 2); what != "memory 512 -> 640 MiB, vcpu 1 -> 2" {
		t.Errorf("what changed: %q", what)
	}
	doc, _ := d.Marshal()
	for _, want := range []string{`<memory unit="MiB" dumpCore="off">640</memory>`,
		`<currentMemory unit="MiB">640</currentMemory>`, `<vcpu placement="static">2</vcpu>`,
		`<uuid>0b1c8a2e-0000-4000-8000-0000000000aa</uuid>`, `<mac address="52:54:00:a8:5f:e6"></mac>`,
		`dev-web01.qcow2`} {
		if !strings.Contains(doc, want) {
			t.Errorf("resized definition lacks %s:\n%s", want, doc)
		}
	}
}
