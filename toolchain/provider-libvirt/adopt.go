package main

// Adoption after an interrupted `pulumi up`. A `pulumi up` killed while it waited for a Create leaves
// the object in libvirt and only a pending operation in the state; once that is cleared (scripts/
// recover.py) the next `pulumi up` creates it again and libvirt says the name is taken. Create first
// looks for a same-named object:
//
//   - It carries this stack's marker: it is adopted. Domains, networks and pools are made with a UUID
//     derived from the stack ("<project>/<stack>" from the URN), the kind and the libvirt name
//     (markerUUID), which an object made by hand or by another stack does not have by chance, and
//     which libvirt keeps across redefinitions. A domain, network or pool is taken over as it is
//     (started when it should run: the next `pulumi up` reconciles the rest, refresh-before-update).
//     Volumes and seeds have no UUID: theirs is the pool's, they are this stack's when they lie in a
//     pool that carries its marker. A volume made by an upload (a source; every seed) may be partial,
//     so it is deleted and made again (a base that overlays were made over is complete: adopted); an
//     overlay or an empty volume is made at once by libvirt, and is adopted when its backing store is
//     the one asked for (else made again).
//   - It does not: Create refuses, naming the object and the virsh command that removes it.
//
// Objects made before markers existed have random UUIDs: they are refused, not adopted.

import (
	"context"
	"fmt"
	"strings"

	"github.com/digitalocean/go-libvirt"
	"github.com/google/uuid"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"libvirt.org/go/libvirtxml"
)

// markerSpace is the namespace of the project's marker UUIDs (fixed: changing it un-marks every object).
var markerSpace = uuid.MustParse("6f1c1d2e-5a0b-4c8e-9a43-2d7b0c6e4a11")

// owner is the stack a URN belongs to, as "<project>/<stack>".
func owner(urn string) (string, error) {
	rest, ok := strings.CutPrefix(urn, "urn:pulumi:")
	parts := strings.SplitN(rest, "::", 3)
	if !ok || len(parts) < 3 || parts[0] == "" || parts[1] == "" {
		return "", fmt.Errorf("urn %q: not a Pulumi resource URN", urn)
	}
	return parts[1] + "/" + parts[0], nil
}

// markerUUID is the UUID the stack of `urn` gives the libvirt object of `kind` called `name`.
func markerUUID(urn, kind, name string) (string, error) {
	own, err := owner(urn)
	if err != nil {
		return "", err
	}
	return uuid.NewSHA1(markerSpace, []byte(own+"\x00"+kind+"\x00"+name)).String(), nil
}

// notOurs is the refusal of a same-named object without this stack's marker.
func notOurs(urn, kind, name, why, remove string) error {
	own, _ := owner(urn)
	return fmt.Errorf("%s %q already exists in libvirt and is not stack %s's (%s): it was made by hand, by another "+
		"stack, or before this plugin marked what it makes; remove it (%s) or rename it, then run `pulumi up` again",
		kind, name, own, why, remove)
}

// adopted logs one line on the resource.
func adopted(ctx context.Context, o *op, kind, name, what string) {
	o.warn(ctx, fmt.Sprintf("%s %q existed already with this stack's marker (left by an interrupted `pulumi up`): %s",
		kind, name, what))
}

func adoptDomain(ctx context.Context, o *op, args any) (string, resource.PropertyMap, bool, error) {
	a := *args.(*domainArgs)
	d, err := o.l.DomainLookupByName(a.Name)
	if isNotFound(err) {
		return "", nil, false, nil
	} else if err != nil {
		return "", nil, false, err
	}
	want, err := markerUUID(o.urn, "domain", a.Name)
	if err != nil {
		return "", nil, false, err
	}
	id := uuidString(d.UUID)
	if id != want {
		return "", nil, false, notOurs(o.urn, "domain", a.Name, "its UUID "+id+" is not the stack's marker",
			fmt.Sprintf("virsh destroy %s; virsh undefine %s", a.Name, a.Name))
	}
	what := "adopted"
	if run, err := domainRunning(o.l, d); err != nil {
		return "", nil, false, err
	} else if !run && (a.Running == nil || *a.Running) {
		if err := o.l.DomainCreate(d); err != nil {
			return "", nil, false, fmt.Errorf("domain %q: adopted, but it does not start: %w", a.Name, err)
		}
		what = "adopted and started"
	}
	if err := o.l.DomainSetAutostart(d, boolInt(a.Autostart)); err != nil {
		return "", nil, false, err
	}
	adopted(ctx, o, "domain", a.Name, what)
	seen, err := readDomain(ctx, o, id, nil)
	return id, seen, true, err
}

func adoptNetwork(ctx context.Context, o *op, args any) (string, resource.PropertyMap, bool, error) {
	a := *args.(*networkArgs)
	n, err := o.l.NetworkLookupByName(a.Name)
	if isNotFound(err) {
		return "", nil, false, nil
	} else if err != nil {
		return "", nil, false, err
	}
	want, err := markerUUID(o.urn, "network", a.Name)
	if err != nil {
		return "", nil, false, err
	}
	id := uuidString(n.UUID)
	if id != want {
		return "", nil, false, notOurs(o.urn, "network", a.Name, "its UUID "+id+" is not the stack's marker",
			fmt.Sprintf("virsh net-destroy %s; virsh net-undefine %s", a.Name, a.Name))
	}
	what := "adopted"
	if active, err := o.l.NetworkIsActive(n); err != nil {
		return "", nil, false, err
	} else if active == 0 {
		if err := o.l.NetworkCreate(n); err != nil {
			return "", nil, false, fmt.Errorf("network %q: adopted, but it does not start: %w", a.Name, err)
		}
		what = "adopted and started"
	}
	if err := o.l.NetworkSetAutostart(n, boolInt(a.Autostart)); err != nil {
		return "", nil, false, err
	}
	adopted(ctx, o, "network", a.Name, what)
	seen, err := readNetwork(ctx, o, id, nil)
	return id, seen, true, err
}

func adoptPool(ctx context.Context, o *op, args any) (string, resource.PropertyMap, bool, error) {
	a := *args.(*poolArgs)
	p, err := o.l.StoragePoolLookupByName(a.Name)
	if isNotFound(err) {
		return "", nil, false, nil
	} else if err != nil {
		return "", nil, false, err
	}
	if ours, err := poolIsOurs(o, p); err != nil {
		return "", nil, false, err
	} else if !ours {
		return "", nil, false, notOurs(o.urn, "pool", a.Name, "its UUID "+uuidString(p.UUID)+" is not the stack's marker",
			fmt.Sprintf("virsh pool-destroy %s; virsh pool-undefine %s", a.Name, a.Name))
	}
	what := "adopted"
	if active, err := o.l.StoragePoolIsActive(p); err != nil {
		return "", nil, false, err
	} else if active == 0 {
		if err := o.l.StoragePoolCreate(p, 0); err != nil {
			return "", nil, false, fmt.Errorf("pool %q: adopted, but it does not start: %w", a.Name, err)
		}
		what = "adopted and started"
	}
	if err := o.l.StoragePoolSetAutostart(p, 1); err != nil {
		return "", nil, false, err
	}
	adopted(ctx, o, "pool", a.Name, what)
	return uuidString(p.UUID), nil, true, nil
}

func poolIsOurs(o *op, p libvirt.StoragePool) (bool, error) {
	want, err := markerUUID(o.urn, "pool", p.Name)
	return uuidString(p.UUID) == want, err
}

// existingVolume finds volume `name` of pool `pool` for adoption: not there (ok false, no error), there in a
// pool of this stack (ok true), or there in any other pool (the refusal).
func existingVolume(o *op, kind, pool, name string) (libvirt.StorageVol, bool, error) {
	p, err := o.l.StoragePoolLookupByName(pool)
	if err != nil {
		return libvirt.StorageVol{}, false, nil // Create says what is wrong with the pool
	}
	v, err := o.l.StorageVolLookupByName(p, name)
	if isNotFound(err) {
		return v, false, nil
	} else if err != nil {
		return v, false, err
	}
	if ours, err := poolIsOurs(o, p); err != nil {
		return v, false, err
	} else if !ours {
		return v, false, notOurs(o.urn, kind, pool+"/"+name, "its pool "+pool+" does not carry the stack's marker",
			fmt.Sprintf("virsh vol-delete --pool %s %s", pool, name))
	}
	return v, true, nil
}

// remake deletes a same-named volume of this stack, made by an upload that may not have finished.
func remake(ctx context.Context, o *op, kind string, v libvirt.StorageVol) error {
	if err := deleteVolume(ctx, o, v.Key); err != nil {
		return fmt.Errorf("%s %s/%s existed already (an interrupted `pulumi up`) and cannot be made again: %w",
			kind, v.Pool, v.Name, err)
	}
	adopted(ctx, o, kind, v.Pool+"/"+v.Name, "made again (an upload may have been cut short)")
	return nil
}

func adoptVolume(ctx context.Context, o *op, args any) (string, resource.PropertyMap, bool, error) {
	a := *args.(*volumeArgs)
	v, found, err := existingVolume(o, "volume", a.Pool, a.Name)
	if err != nil || !found {
		return "", nil, false, err
	}
	if a.Source == "" {
		_, x, err := volumeByKey(o.l, v.Key)
		if err != nil {
			return "", nil, false, err
		}
		if base, err := wantedBase(o, a); err != nil {
			return "", nil, false, err
		} else if (x.BackingStore == nil && base == "") || (x.BackingStore != nil && x.BackingStore.Path == base) {
			adopted(ctx, o, "volume", a.Pool+"/"+a.Name, "adopted")
			outs, err := readVolume(ctx, o, v.Key, nil)
			return v.Key, outs, true, err
		}
	}
	// From an upload: partial, unless overlays were made over it (which needs its Create to have returned).
	if users, err := overlaysOf(o.l, v); err != nil {
		return "", nil, false, err
	} else if len(users) > 0 {
		adopted(ctx, o, "volume", a.Pool+"/"+a.Name, "adopted (the base of "+strings.Join(users, ", ")+")")
		outs, err := readVolume(ctx, o, v.Key, nil)
		return v.Key, outs, true, err
	}
	return "", nil, false, remake(ctx, o, "volume", v)
}

// wantedBase is the path of the base volume an overlay asks for ("" when none).
func wantedBase(o *op, a volumeArgs) (string, error) {
	key := a.BaseVolumeID
	if key == "" && a.BaseVolumeName != "" {
		p, err := o.l.StoragePoolLookupByName(a.BaseVolumePool)
		if err != nil {
			return "", err
		}
		b, err := o.l.StorageVolLookupByName(p, a.BaseVolumeName)
		if err != nil {
			return "", err
		}
		key = b.Key
	}
	if key == "" {
		return "", nil
	}
	_, x, err := volumeByKey(o.l, key)
	if err != nil {
		return "", err
	}
	return x.Target.Path, nil
}

func adoptCloudInit(ctx context.Context, o *op, args any) (string, resource.PropertyMap, bool, error) {
	a := *args.(*cloudInitArgs)
	v, found, err := existingVolume(o, "seed", a.Pool, a.Name)
	if err != nil || !found {
		return "", nil, false, err
	}
	return "", nil, false, remake(ctx, o, "seed", v) // its user-data must be this run's
}

// markDomain, markNetwork and markPool give a definition the stack's marker UUID.
func markDomain(o *op, d *libvirtxml.Domain) (err error) {
	d.UUID, err = markerUUID(o.urn, "domain", d.Name)
	return err
}

func markNetwork(o *op, n *libvirtxml.Network) (err error) {
	n.UUID, err = markerUUID(o.urn, "network", n.Name)
	return err
}

func markPool(o *op, p *libvirtxml.StoragePool) (err error) {
	p.UUID, err = markerUUID(o.urn, "pool", p.Name)
	return err
}
