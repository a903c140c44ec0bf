<?xml version="1.0" encoding="UTF-8"?>
<!--
  Applied by the pulumi-libvirt Domain's `xml.xslt` to the domain XML the provider generates
  (the provider runs xsltproc on the deploy host). Identity transform plus two additions:

  1. Domains of type 'qemu' (TCG, no hardware KVM) get a capped translation-block cache:
       <features><tcg><tb-cache unit='MiB'>128</tb-cache></tcg></features>
     merged into an existing <features> (or a new one). Without the cap QEMU 7.2 sizes the cache
     from guest RAM and a 512 MiB guest costs ~1.5 GiB of host RSS; with it ~0.5 GiB (the bench's
     memory target is 0.55 GiB per VM). The trade-off, measured 2026-12-06: at 128 MiB QEMU flushes
     the cache (all translated code thrown away; `info jit`: "TB flush count") 8-24 times within 3
     minutes of a first boot, at 512 MiB 1-3 times and the VMs' first boot was ~5-10 s shorter
     (62-65 s instead of 68-78 s, together with the image's skipped early nft load), at ~0.87 GiB of
     RSS per VM. Run with tb_cache_mib=512 to trade memory for boot time.
     Domains of type 'kvm' and domains that already say <tcg> are left alone.
  2. Every <serial> without a <log> gets one, so the guest's serial console is kept (written by
     virtlogd) in /var/log/libvirt/qemu/DOMAIN-serialN.log. The file holds the domain's current run
     (append off: libvirt truncates it when the domain starts; reboots inside one run stay in it).
     Appended across runs, a domain of the same name made again (a new stack, a replaced VM, a
     powered-off node started) showed the old run's "cloud-init finished" line to the boot waits
     until the new kernel printed its banner: a wrong stage, and SSH probes at every poll. A <console> gets one only when it is
     not just the alias of a <serial> (libvirt drops the alias's own settings).

  Try it: xsltproc templates/domain-tcg.xsl domain.xml
  For a manual run the size can be changed with xsltproc's param option (tb_cache_mib).
-->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:output method="xml" indent="yes" encoding="UTF-8" omit-xml-declaration="yes"/>
  <xsl:param name="tb_cache_mib" select="128"/>
  <xsl:param name="log_dir" select="'/var/log/libvirt/qemu'"/>

  <!-- identity: copy everything not matched below -->
  <xsl:template match="@*|node()">
    <xsl:copy>
      <xsl:apply-templates select="@*|node()"/>
    </xsl:copy>
  </xsl:template>

  <xsl:template name="tcg">
    <tcg>
      <tb-cache unit="MiB"><xsl:value-of select="$tb_cache_mib"/></tb-cache>
    </tcg>
  </xsl:template>

  <!-- TCG domain that has <features> but no <tcg>: add it there -->
  <xsl:template match="/domain[@type='qemu']/features[not(tcg)]">
    <xsl:copy>
      <xsl:apply-templates select="@*|node()"/>
      <xsl:call-template name="tcg"/>
    </xsl:copy>
  </xsl:template>

  <!-- TCG domain without <features>: add one (libvirt does not care about element order) -->
  <xsl:template match="/domain[@type='qemu'][not(features)]">
    <xsl:copy>
      <xsl:apply-templates select="@*|node()"/>
      <features>
        <xsl:call-template name="tcg"/>
      </features>
    </xsl:copy>
  </xsl:template>

  <!-- serial consoles: keep a log file -->
  <xsl:template match="/domain/devices/serial[not(log)]
                       | /domain/devices/console[not(log)][not(../serial) or target/@type != 'serial']">
    <xsl:variable name="port">
      <xsl:choose>
        <xsl:when test="target/@port"><xsl:value-of select="target/@port"/></xsl:when>
        <xsl:otherwise><xsl:value-of select="count(preceding-sibling::*[name() = name(current())])"/></xsl:otherwise>
      </xsl:choose>
    </xsl:variable>
    <xsl:copy>
      <xsl:apply-templates select="@*|node()"/>
      <log file="{$log_dir}/{/domain/name}-{name()}{$port}.log" append="off"/>
    </xsl:copy>
  </xsl:template>
</xsl:stylesheet>
