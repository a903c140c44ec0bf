package main

// Inputs of each resource, as the pulumi_libvirt 0.5.4 SDK sends them (camelCase). Only the subset
// this provider implements is declared: any other property is refused by Check (decodeArgs uses
// DisallowUnknownFields), so a program never silently loses a setting.

type providerArgs struct {
	URI string `json:"uri"`
}

type networkArgs struct {
	Name      string      `json:"name"`
	Mode      string      `json:"mode"`      // nat (default), route, open, none, bridge
	Addresses []string    `json:"addresses"` // CIDRs; the bridge gets the first host address
	Autostart bool        `json:"autostart"`
	Bridge    string      `json:"bridge"` // bridge device name (libvirt picks virbrN when empty)
	Domain    string      `json:"domain"` // DNS domain
	Mtu       int         `json:"mtu"`
	Dhcp      *dhcpArgs   `json:"dhcp"`
	DNS       *dnsArgs    `json:"dns"`
	Xml       *xsltArgs   `json:"xml"`
	Routes    []routeArgs `json:"routes"`
}

type dhcpArgs struct {
	Enabled *bool `json:"enabled"` // default true (as upstream)
}

type dnsArgs struct {
	Enabled   *bool `json:"enabled"`
	LocalOnly bool  `json:"localOnly"`
}

type routeArgs struct {
	Cidr    string `json:"cidr"`
	Gateway string `json:"gateway"`
}

type xsltArgs struct {
	Xslt string `json:"xslt"`
}

type poolArgs struct {
	Name string `json:"name"`
	Type string `json:"type"` // dir only
	Path string `json:"path"`
}

type volumeArgs struct {
	Name           string    `json:"name"`
	Pool           string    `json:"pool"`   // pool NAME
	Source         string    `json:"source"` // local path, file:// or http(s):// URL
	Size           int64     `json:"size"`   // bytes, for an empty volume or a bigger overlay
	Format         string    `json:"format"` // qcow2 | raw
	BaseVolumeID   string    `json:"baseVolumeId"`
	BaseVolumeName string    `json:"baseVolumeName"`
	BaseVolumePool string    `json:"baseVolumePool"`
	Xml            *xsltArgs `json:"xml"`
}

type cloudInitArgs struct {
	Name          string `json:"name"`
	Pool          string `json:"pool"`
	UserData      string `json:"userData"`
	MetaData      string `json:"metaData"`
	NetworkConfig string `json:"networkConfig"`
}

type domainArgs struct {
	Name              string              `json:"name"`
	Description       string              `json:"description"`
	Type              string              `json:"type"` // kvm (default) | qemu
	Vcpu              int                 `json:"vcpu"`
	Memory            int                 `json:"memory"` // MiB
	Arch              string              `json:"arch"`
	Machine           string              `json:"machine"`
	Emulator          string              `json:"emulator"`
	Firmware          string              `json:"firmware"`
	CPU               *cpuArgs            `json:"cpu"`
	Cloudinit         string              `json:"cloudinit"`
	Disks             []diskArgs          `json:"disks"`
	NetworkInterfaces []nicArgs           `json:"networkInterfaces"`
	Consoles          []consoleArgs       `json:"consoles"`
	BootDevices       []bootDeviceArgs    `json:"bootDevices"`
	Kernel            string              `json:"kernel"`
	Initrd            string              `json:"initrd"`
	Cmdlines          []map[string]string `json:"cmdlines"`
	Autostart         bool                `json:"autostart"`
	Running           *bool               `json:"running"`
	QemuAgent         bool                `json:"qemuAgent"` // accepted; the agent channel is always added
	Xml               *xsltArgs           `json:"xml"`
}

type cpuArgs struct {
	Mode string `json:"mode"`
}

type diskArgs struct {
	VolumeID    string `json:"volumeId"`
	File        string `json:"file"`
	BlockDevice string `json:"blockDevice"`
}

type nicArgs struct {
	NetworkID    string   `json:"networkId"`
	NetworkName  string   `json:"networkName"`
	Bridge       string   `json:"bridge"`
	Mac          string   `json:"mac"`
	Hostname     string   `json:"hostname"`     // accepted (upstream only uses it for DHCP leases)
	Addresses    []string `json:"addresses"`    // accepted, not acted on (no DHCP host entries)
	WaitForLease bool     `json:"waitForLease"` // must stay false: no lease waiting here
}

type consoleArgs struct {
	Type       string `json:"type"` // pty (default) | file
	TargetPort string `json:"targetPort"`
	TargetType string `json:"targetType"` // serial (default) | virtio
	SourcePath string `json:"sourcePath"`
}

type bootDeviceArgs struct {
	Devs []string `json:"devs"`
}
