#!/usr/bin/env python3
"""Derive Fixtures/NAME.expected.jsonl from Fixtures/NAME.pcap(ng) with tshark.

    python3 Fixtures/expect.py [capture.pcap ...]

Every value in the output comes from a field that tshark's dissectors produced
(tshark -T json); nothing here parses packet bytes. The schema and the mapping
rules are described in Fixtures/README.md. Only the standard library is used.
Tested with TShark 4.0.17.
"""

import glob
import json
import os
import subprocess
import sys
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))

TSHARK_PREFS = [
    "ip.check_checksum:TRUE",
    "tcp.check_checksum:TRUE",
    "udp.check_checksum:TRUE",
    "ip.defragment:FALSE",
    "ipv6.defragment:FALSE",
    "tcp.relative_sequence_numbers:FALSE",
    "tcp.analyze_sequence_numbers:FALSE",
    "tcp.desegment_tcp_streams:FALSE",
]

# ICMP types that carry an identifier and a sequence number.
ICMP_ID_SEQ_TYPES = {0, 8, 13, 14, 15, 16, 17, 18}

# ICMPv6: echo request/reply carry id and seq; NS/NA a target; Packet Too Big an MTU.
ICMPV6_ECHO_TYPES = {128, 129}
ICMPV6_TARGET_FIELDS = {135: "icmpv6.nd.ns.target_address", 136: "icmpv6.nd.na.target_address"}

# DNS record types whose data is reported, and the tshark field holding it.
DNS_DATA_FIELDS = {1: "dns.a", 28: "dns.aaaa", 5: "dns.cname", 12: "dns.ptr.domain_name", 2: "dns.ns"}

# IPv6 extension headers as tshark names them inside the ipv6 object (the
# routing header is not mapped: the decoder refuses one with segments left).
IPV6_EXT_HEADERS = {"ipv6.hopopts": "hop-by-hop", "ipv6.dstopts": "destination options",
                    "ipv6.fraghdr": "fragment"}

# tshark's ip.frag_offset field holds the raw 13-bit header value (units of
# 8 bytes) in 4.0, although `tshark -V` displays it in bytes.
FRAG_OFFSET_UNIT = 8

# Expert-info severity "error" (PI_ERROR) in tshark's JSON.
PI_ERROR = 0x00800000


# Facts noticed while mapping that the records themselves do not show
# (reset for every capture; printed in the summary).
SEEN = Counter()


class FixtureError(Exception):
    pass


def aslist(v):
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def one(d, key, where):
    """A field that must be present exactly once."""
    if key not in d:
        raise FixtureError("%s: missing field %s" % (where, key))
    v = d[key]
    if isinstance(v, list):
        raise FixtureError("%s: field %s occurs %d times" % (where, key, len(v)))
    return v


def num(s):
    """tshark prints integers in decimal or as 0x-hex strings."""
    s = s.strip()
    return int(s, 16) if s.lower().startswith("0x") else int(s, 10)


def flag(s):
    if s not in ("0", "1"):
        raise FixtureError("boolean field with value %r" % s)
    return s == "1"


def walk(obj):
    """Yields (key, value) for every key at every depth."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k, v
            yield from walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk(v)


def run_tshark(path):
    cmd = ["tshark", "-r", path, "-n", "-T", "json", "--no-duplicate-keys"]
    for p in TSHARK_PREFS:
        cmd += ["-o", p]
    try:
        res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise FixtureError("tshark not found (Debian package: tshark)")
    if res.returncode != 0:
        raise FixtureError("tshark failed on %s:\n%s" % (path, res.stderr.decode(errors="replace")))
    return [pkt["_source"]["layers"] for pkt in json.loads(res.stdout.decode("utf-8"))]


# --- per-layer mapping -------------------------------------------------------

def map_eth(layers, where):
    eth = layers["eth"]
    out = {
        "src": one(eth, "eth.src", where).lower(),
        "dst": one(eth, "eth.dst", where).lower(),
    }
    if "vlan" in layers:
        vlan = layers["vlan"]
        if isinstance(vlan, list):
            raise FixtureError("%s: more than one 802.1Q tag" % where)
        out["type"] = num(one(vlan, "vlan.etype", where))
        out["vlan"] = num(one(vlan, "vlan.id", where))
    else:
        out["type"] = num(one(eth, "eth.type", where))
    return out


def map_arp(arp, where):
    if num(one(arp, "arp.hw.type", where)) != 1 or num(one(arp, "arp.proto.type", where)) != 0x0800:
        return None  # only Ethernet/IPv4 ARP is in the schema
    return {
        "op": num(one(arp, "arp.opcode", where)),
        "sha": one(arp, "arp.src.hw_mac", where).lower(),
        "spa": one(arp, "arp.src.proto_ipv4", where),
        "tha": one(arp, "arp.dst.hw_mac", where).lower(),
        "tpa": one(arp, "arp.dst.proto_ipv4", where),
    }


def map_ipv4(ip, where):
    flags = one(ip, "ip.flags_tree", where)
    return {
        "src": one(ip, "ip.src", where),
        "dst": one(ip, "ip.dst", where),
        "proto": num(one(ip, "ip.proto", where)),
        "ttl": num(one(ip, "ip.ttl", where)),
        "id": num(one(ip, "ip.id", where)),
        "df": flag(one(flags, "ip.flags.df", where)),
        "mf": flag(one(flags, "ip.flags.mf", where)),
        "offset": num(one(ip, "ip.frag_offset", where)) * FRAG_OFFSET_UNIT,
        "len": num(one(ip, "ip.len", where)),
        "ihl": num(one(ip, "ip.hdr_len", where)),
        "checksum_ok": one(ip, "ip.checksum.status", where) == "1",
    }


def map_icmp(icmp, where):
    # Only the outer ICMP header: the quoted IP/UDP/... of an error message
    # sits in nested "ip"/"udp" objects inside the icmp object; not read here.
    t = num(one(icmp, "icmp.type", where))
    out = {"type": t, "code": num(one(icmp, "icmp.code", where))}
    if t in ICMP_ID_SEQ_TYPES:
        out["id"] = num(one(icmp, "icmp.ident", where))  # big-endian reading
        out["seq"] = num(one(icmp, "icmp.seq", where))   # big-endian reading
    out["checksum_ok"] = one(icmp, "icmp.checksum.status", where) == "1"
    return out


def map_udp(udp, where, ipv6=False):
    csum = num(one(udp, "udp.checksum", where))
    status = udp.get("udp.checksum.status")
    if status is None:
        status = udp.get("udp.checksum_tree", {}).get("udp.checksum.status")
    if csum == 0:
        SEEN["udp checksum field 0 (none)"] += 1
    return {
        "sport": num(one(udp, "udp.srcport", where)),
        "dport": num(one(udp, "udp.dstport", where)),
        "len": num(one(udp, "udp.length", where)),
        # A zero checksum means "none" over IPv4 and is invalid over IPv6 (RFC 8200 §8.1).
        "checksum_ok": (csum == 0 and not ipv6) or status == "1",
    }


def map_tcp_options(tcp, where):
    opts = {}
    tree = tcp.get("tcp.options_tree")
    if tree is None:
        return opts
    if "tcp.options.mss_tree" in tree:
        opts["mss"] = num(one(one(tree, "tcp.options.mss_tree", where), "tcp.options.mss_val", where))
    if "tcp.options.wscale_tree" in tree:
        opts["wscale"] = num(one(one(tree, "tcp.options.wscale_tree", where), "tcp.options.wscale.shift", where))
    if "tcp.options.sack_perm" in tree:
        one(tree, "tcp.options.sack_perm", where)
        opts["sack_permitted"] = True
    if "tcp.options.sack_tree" in tree:
        sack = one(tree, "tcp.options.sack_tree", where)
        le = [num(x) for x in aslist(sack.get("tcp.options.sack_le"))]
        re_ = [num(x) for x in aslist(sack.get("tcp.options.sack_re"))]
        if len(le) != len(re_) or len(le) != num(one(sack, "tcp.options.sack.count", where)):
            raise FixtureError("%s: inconsistent SACK block fields" % where)
        opts["sack"] = [[a, b] for a, b in zip(le, re_)]
    if "tcp.options.timestamp_tree" in tree:
        ts = one(tree, "tcp.options.timestamp_tree", where)
        opts["ts"] = [num(one(ts, "tcp.options.timestamp.tsval", where)),
                      num(one(ts, "tcp.options.timestamp.tsecr", where))]
    return opts


def map_tcp(tcp, where):
    seq = num(one(tcp, "tcp.seq_raw", where))
    ack = num(one(tcp, "tcp.ack_raw", where))
    # With relative sequence numbers off, tcp.seq must equal the raw field.
    if num(one(tcp, "tcp.seq", where)) != seq:
        raise FixtureError("%s: tcp.seq is not raw (relative sequence numbers still on?)" % where)
    return {
        "sport": num(one(tcp, "tcp.srcport", where)),
        "dport": num(one(tcp, "tcp.dstport", where)),
        "seq": seq,
        "ack": ack,
        "flags": num(one(tcp, "tcp.flags", where)),
        "window": num(one(tcp, "tcp.window_size_value", where)),
        "payload_len": num(one(tcp, "tcp.len", where)),
        "checksum_ok": one(tcp, "tcp.checksum.status", where) == "1",
        "options": map_tcp_options(tcp, where),
    }


def _names(v):
    return [n[:-1] if n.endswith(".") else n for n in aslist(v)]


# DHCP option code -> (output key, tshark field inside the option's subtree, converter)
DHCP_OPTIONS = {
    1: ("subnet_mask", "dhcp.option.subnet_mask", lambda v: v),
    3: ("router", "dhcp.option.router", lambda v: list(aslist(v))),
    6: ("dns", "dhcp.option.domain_name_server", lambda v: list(aslist(v))),
    51: ("lease_time", "dhcp.option.ip_address_lease_time", num),
    54: ("server_id", "dhcp.option.dhcp_server_id", lambda v: v),
    50: ("requested_ip", "dhcp.option.requested_ip_address", lambda v: v),
    26: ("mtu", "dhcp.option.interface_mtu", num),
    119: ("domain_search", "dhcp.option.dhcp_dns_domain_search_list_fqdn", _names),
    12: ("hostname", "dhcp.option.hostname", lambda v: v),
    55: ("param_request", "dhcp.option.request_list_item", lambda v: [num(x) for x in aslist(v)]),
}
# Order of keys in the output "options" object (same as the schema).
DHCP_OPTION_ORDER = ["subnet_mask", "router", "dns", "lease_time", "server_id",
                     "requested_ip", "mtu", "domain_search", "hostname", "param_request"]


def map_dhcp(dhcp, where):
    out = {
        "op": num(one(dhcp, "dhcp.type", where)),
        "xid": num(one(dhcp, "dhcp.id", where)),
        "ciaddr": one(dhcp, "dhcp.ip.client", where),
        "yiaddr": one(dhcp, "dhcp.ip.your", where),
        "siaddr": one(dhcp, "dhcp.ip.server", where),
        "chaddr": one(dhcp, "dhcp.hw.mac_addr", where).lower(),
    }
    codes = aslist(dhcp.get("dhcp.option.type"))
    trees = aslist(dhcp.get("dhcp.option.type_tree"))
    if len(codes) != len(trees):
        raise FixtureError("%s: %d DHCP option codes but %d option trees" % (where, len(codes), len(trees)))
    msg_type = None
    found = {}
    for code, tree in zip(codes, trees):
        code = num(code)
        if code == 53:
            if msg_type is not None:
                raise FixtureError("%s: two DHCP message type options" % where)
            msg_type = num(one(tree, "dhcp.option.dhcp", where))
        elif code in DHCP_OPTIONS:
            key, field, conv = DHCP_OPTIONS[code]
            if key in found:
                raise FixtureError("%s: DHCP option %d occurs twice" % (where, code))
            if field not in tree:
                raise FixtureError("%s: DHCP option %d has no field %s" % (where, code, field))
            found[key] = conv(tree[field])
    if msg_type is not None:
        out["msg_type"] = msg_type
    out["options"] = {k: found[k] for k in DHCP_OPTION_ORDER if k in found}
    return out


def map_ipv6(ip6, where):
    return {
        "src": one(ip6, "ipv6.src", where),
        "dst": one(ip6, "ipv6.dst", where),
        "next_header": num(one(ip6, "ipv6.nxt", where)),
        "hop_limit": num(one(ip6, "ipv6.hlim", where)),
        "payload_len": num(one(ip6, "ipv6.plen", where)),
        "flow_label": num(one(ip6, "ipv6.flow", where)),
        "traffic_class": num(one(ip6, "ipv6.tclass", where)),
    }


def ipv6_chain(ip6, where):
    """(upper-layer protocol, ipv6_frag or None) from the extension headers
    tshark found, in the order they appear."""
    upper = num(one(ip6, "ipv6.nxt", where))
    frag = None
    for key, value in ip6.items():
        if key == "ipv6.routing" or key.startswith("ipv6.routing"):
            raise FixtureError("%s: routing headers are not in the fixture mapping" % where)
        if key not in IPV6_EXT_HEADERS:
            continue
        if isinstance(value, list):
            raise FixtureError("%s: two %s headers" % (where, IPV6_EXT_HEADERS[key]))
        SEEN["ipv6 %s header" % IPV6_EXT_HEADERS[key]] += 1
        upper = num(one(value, key + ".nxt", where))
        if key == "ipv6.fraghdr":
            frag = {
                "next_header": upper,
                # ipv6.fraghdr.offset is the raw 13-bit value in 8-byte units, as ip.frag_offset.
                "offset": num(one(value, "ipv6.fraghdr.offset", where)) * FRAG_OFFSET_UNIT,
                "more": flag(one(value, "ipv6.fraghdr.more", where)),
                "id": num(one(value, "ipv6.fraghdr.ident", where)),
            }
    return upper, frag


def map_icmpv6(icmp, where):
    # As for ICMP: only the outer header; a quoted packet sits inside the icmpv6 object.
    t = num(one(icmp, "icmpv6.type", where))
    out = {"type": t, "code": num(one(icmp, "icmpv6.code", where)),
           "checksum_ok": one(icmp, "icmpv6.checksum.status", where) == "1"}
    if t in ICMPV6_ECHO_TYPES:
        out["id"] = num(one(icmp, "icmpv6.echo.identifier", where))
        out["seq"] = num(one(icmp, "icmpv6.echo.sequence_number", where))
    if t in ICMPV6_TARGET_FIELDS:
        out["target"] = one(icmp, ICMPV6_TARGET_FIELDS[t], where)
    if t == 2:
        out["mtu"] = num(one(icmp, "icmpv6.mtu", where))
    return out


def _dns_name(v):
    return "." if v == "<Root>" else v


def _dns_entries(section):
    """The entries of a Queries/Answers tree in order (identical summaries, which
    --no-duplicate-keys folds into one key, become a list there)."""
    out = []
    for value in (section or {}).values():
        out.extend(aslist(value))
    return out


def map_dns(dns, where):
    flags = one(dns, "dns.flags_tree", where)
    questions = [{"name": _dns_name(one(q, "dns.qry.name", where)), "type": num(one(q, "dns.qry.type", where))}
                 for q in _dns_entries(dns.get("Queries"))]
    answers = []
    for a in _dns_entries(dns.get("Answers")):
        t = num(one(a, "dns.resp.type", where))
        record = {"name": _dns_name(one(a, "dns.resp.name", where)), "type": t,
                  "ttl": num(one(a, "dns.resp.ttl", where))}
        if t in DNS_DATA_FIELDS:
            record["data"] = _dns_name(one(a, DNS_DATA_FIELDS[t], where))
        else:
            SEEN["dns answer of type %d (no data)" % t] += 1
        answers.append(record)
    if len(questions) != num(one(dns, "dns.count.queries", where)) or \
            len(answers) != num(one(dns, "dns.count.answers", where)):
        raise FixtureError("%s: DNS section counts disagree with the entries found" % where)
    return {
        "id": num(one(dns, "dns.id", where)),
        "qr": flag(one(flags, "dns.flags.response", where)),
        # tshark shows dns.flags.rcode for responses only; the field is the low 4 bits of dns.flags.
        "rcode": num(one(dns, "dns.flags", where)) & 0xF,
        "questions": questions,
        "answers": answers,
    }


def map_udp_payload(out, layers, where):
    ports = {out["udp"]["sport"], out["udp"]["dport"]}
    if "dhcp" in layers and ports & {67, 68}:
        out["dhcp"] = map_dhcp(layers["dhcp"], where)
    if "dns" in layers and 53 in ports:
        out["dns"] = map_dns(layers["dns"], where)


def map_ipv6_frame(out, layers, where):
    ip6 = layers["ipv6"]
    if isinstance(ip6, list):
        raise FixtureError("%s: more than one top-level IPv6 header" % where)
    out["ipv6"] = map_ipv6(ip6, where)
    upper, frag = ipv6_chain(ip6, where)
    if frag is not None:
        out["ipv6_frag"] = frag
        if frag["more"] or frag["offset"] > 0:
            return out  # a fragment: nothing above ipv6_frag (an atomic fragment is whole)
    if upper == 58 and "icmpv6" in layers:
        out["icmpv6"] = map_icmpv6(layers["icmpv6"], where)
    elif upper == 17 and "udp" in layers:
        out["udp"] = map_udp(layers["udp"], where, ipv6=True)
        map_udp_payload(out, layers, where)
    elif upper == 6 and "tcp" in layers:
        out["tcp"] = map_tcp(layers["tcp"], where)
    return out


def check_errors(layers, where):
    for k, v in walk(layers):
        if k == "_ws.malformed":
            raise FixtureError("%s: tshark reports a malformed packet" % where)
        if k == "_ws.expert" and isinstance(v, dict):
            sev = v.get("_ws.expert.severity")
            if sev is not None and num(sev) >= PI_ERROR:
                raise FixtureError("%s: tshark expert error: %s" % (where, v.get("_ws.expert.message")))


def map_frame(layers, where):
    check_errors(layers, where)
    frame = layers["frame"]
    out = {"frame": num(one(frame, "frame.number", where)),
           "len": num(one(frame, "frame.cap_len", where))}
    if "eth" not in layers:
        return out
    out["eth"] = map_eth(layers, where)
    if "arp" in layers:
        arp = map_arp(layers["arp"], where)
        if arp is not None:
            out["arp"] = arp
        return out
    if "ipv6" in layers:
        return map_ipv6_frame(out, layers, where)
    ip = layers.get("ip")
    if ip is None:
        return out  # everything else: frame/len/eth only
    if isinstance(ip, list):
        raise FixtureError("%s: more than one top-level IPv4 header" % where)
    out["ipv4"] = v4 = map_ipv4(ip, where)
    if v4["mf"] or v4["offset"] > 0:
        return out  # a fragment: nothing above ipv4, not even in the first one
    if v4["proto"] == 1 and "icmp" in layers:
        out["icmp"] = map_icmp(layers["icmp"], where)
    elif v4["proto"] == 17 and "udp" in layers:
        out["udp"] = map_udp(layers["udp"], where)
        map_udp_payload(out, layers, where)
    elif v4["proto"] == 6 and "tcp" in layers:
        out["tcp"] = map_tcp(layers["tcp"], where)
    return out


# --- driver -----------------------------------------------------------------

LAYERS = ("eth", "arp", "ipv4", "ipv6", "ipv6_frag", "icmp", "icmpv6", "udp", "tcp", "dhcp", "dns")


def summarize(name, records):
    layers = Counter()
    notes = Counter()
    for r in records:
        for k in LAYERS:
            if k in r:
                layers[k] += 1
        eth = r.get("eth")
        if eth and "vlan" in eth:
            notes["vlan-tagged"] += 1
        if eth and "ipv4" not in r and "arp" not in r and "ipv6" not in r:
            notes["eth-only (type 0x%04x)" % eth["type"]] += 1
        v4 = r.get("ipv4")
        if v4:
            if v4["mf"] or v4["offset"]:
                notes["ipv4 fragments"] += 1
            if v4["ihl"] > 20:
                notes["ipv4 with options"] += 1
            if not v4["checksum_ok"]:
                notes["BAD ipv4 checksum"] += 1
        if "ipv6_frag" in r and (r["ipv6_frag"]["more"] or r["ipv6_frag"]["offset"]):
            notes["ipv6 fragments"] += 1
        if "icmpv6" in r:
            notes["icmpv6 type %d code %d" % (r["icmpv6"]["type"], r["icmpv6"]["code"])] += 1
        for k in ("icmp", "icmpv6", "udp", "tcp"):
            if k in r and not r[k]["checksum_ok"]:
                notes["BAD %s checksum" % k] += 1
        if "udp" in r and r["udp"]["sport"] not in (67, 68) and "dhcp" not in r and "dns" not in r:
            notes["udp (not dhcp or dns)"] += 1
        if "dns" in r:
            notes["dns %s rcode %d" % ("response" if r["dns"]["qr"] else "query", r["dns"]["rcode"])] += 1
        if "tcp" in r and r["tcp"]["flags"] & 0x04:
            notes["tcp RST"] += 1
        if "icmp" in r and r["icmp"]["type"] not in ICMP_ID_SEQ_TYPES:
            notes["icmp type %d code %d" % (r["icmp"]["type"], r["icmp"]["code"])] += 1
        if "tcp" in r and "sack" in r["tcp"]["options"]:
            notes["tcp with SACK blocks"] += 1
            notes["SACK blocks"] += len(r["tcp"]["options"]["sack"])
        if "tcp" in r and r["tcp"]["flags"] & 0x02:
            notes["tcp SYN (%s)" % ",".join(sorted(r["tcp"]["options"]))] += 1
        if "dhcp" in r:
            notes["dhcp msg_type %s" % r["dhcp"].get("msg_type")] += 1
    notes.update(SEEN)
    parts = ", ".join("%s %d" % (k, layers[k]) for k in LAYERS if layers[k])
    print("%s: %d frames; layers: %s" % (name, len(records), parts))
    for k in sorted(notes):
        print("    %s: %d" % (k, notes[k]))
    return notes


def check_tshark_version():
    try:
        out = subprocess.run(["tshark", "--version"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL).stdout.decode(errors="replace")
    except FileNotFoundError:
        print("ERROR: tshark not found (Debian package: tshark)", file=sys.stderr)
        sys.exit(1)
    first = out.splitlines()[0] if out else ""
    if "4.0." not in first:
        print("WARNING: written for TShark 4.0, found %r: re-check the field conversions "
              "(e.g. FRAG_OFFSET_UNIT) against `tshark -V` before trusting the output" % first,
              file=sys.stderr)


def main(argv):
    check_tshark_version()
    paths = argv[1:] or sorted(glob.glob(os.path.join(HERE, "*.pcap")) +
                               glob.glob(os.path.join(HERE, "*.pcapng")))
    if not paths:
        print("no captures found in %s" % HERE, file=sys.stderr)
        return 1
    failed = False
    for path in paths:
        name = os.path.basename(path)
        SEEN.clear()
        try:
            records = [map_frame(l, "%s frame %s" % (name, l["frame"]["frame.number"]))
                       for l in run_tshark(path)]
        except FixtureError as e:
            print("ERROR: %s" % e, file=sys.stderr)
            failed = True
            continue
        base = path.rsplit(".", 1)[0]
        with open(base + ".expected.jsonl", "w") as f:
            for r in records:
                f.write(json.dumps(r, separators=(",", ":")) + "\n")
        notes = summarize(name, records)
        if any(k.startswith("BAD") for k in notes):
            print("ERROR: %s has frames with bad checksums" % name, file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
