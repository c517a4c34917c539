"""Every default of the site config in one place: keepalived's own (kc5, check_*.c) and gridlb's.

A field left out of a site file takes the value named here; the schema, the keepalived renderer and
the lint all read these constants instead of repeating numbers. Sources: keepalived.conf(5) and
keepalived 2.2's check and vrrp parsers (keepalived/check/check_parser.c, keepalived/vrrp/vrrp_parser.c).
"""

from __future__ import annotations

from typing import Final

# --- VRRP instance (keepalived vrrp.h / vrrp_parser.c / kc5) ---------------------------------------
VRRP_STATE = "BACKUP"  # initial state when `state` is absent
VRRP_PRIORITY = 100  # VRRP_PRIO_DFL
VRRP_PRIORITY_MIN = 1
VRRP_PRIORITY_MAX = 255  # 255 = address owner
VRID_MIN = 1
VRID_MAX = 255
VRRP_ADVERT_INT_S = 1.0  # VRRP_ADVER_DFL
VRRP_ADVERT_INT_MIN_S = 0.01
VRRP_ADVERT_INT_MAX_S = 255.0  # v2 limit; v3 is limited to < 40.96 s (checked by lint)
VRRP_V3_ADVERT_INT_MAX_S = 40.95
VRRP_VERSION = 2  # global vrrp_version; IPv6 instances always use 3
VRRP_PREEMPT_DELAY_S = 0.0
VRRP_PREEMPT_DELAY_MAX_S = 1000.0
VRRP_GARP_MASTER_DELAY_S = 5.0  # second burst after becoming master (0 = none)
VRRP_GARP_MASTER_REPEAT = 5
VRRP_GARP_MASTER_REFRESH_S = 0.0  # 0 = no periodic refresh
VRRP_GARP_MASTER_REFRESH_REPEAT = 1
VRRP_TRACK_WEIGHT_MIN = -253
VRRP_TRACK_WEIGHT_MAX = 253
VRRP_AUTH_PASS_MAX_LEN = 8  # v2 PASS auth carries 8 bytes

# --- vrrp_script (kc5) --------------------------------------------------------------------------
VRRP_SCRIPT_INTERVAL_S = 1.0
VRRP_SCRIPT_WEIGHT = 0
VRRP_SCRIPT_RISE = 1
VRRP_SCRIPT_FALL = 1

# --- virtual_server / real_server / checkers (kc5 §virtual_server, check_api.c) --------------------
VS_PROTOCOL = "TCP"
VS_SCHEDULER: Final = "wlc"  # ipvsadm's default scheduler, used when lb_algo/lvs_sched is absent
VS_LB_KIND: Final = "NAT"  # keepalived: lvs_method defaults to NAT
VS_PERSISTENCE_TIMEOUT_S = 360  # `persistence_timeout` given without a value (IPVS_SVC_PERSISTENT_TIMEOUT)
VS_QUORUM = 1
VS_HYSTERESIS = 0
RS_WEIGHT = 1
RS_WEIGHT_MIN = 0
RS_WEIGHT_MAX = 65535
PORT_MIN = 0
PORT_MAX = 65535
FWMARK_MIN = 1
FWMARK_MAX = 0xFFFFFFFF

CHECK_CONNECT_TIMEOUT_S = 5.0
CHECK_RETRY = 1  # TCP_CHECK, GRIDFTP_CHECK
CHECK_RETRY_MISC = 0  # MISC_CHECK
CHECK_DELAY_BEFORE_RETRY_S = 1.0
CHECK_DELAY_BEFORE_RETRY_HTTP_S = 3.0  # HTTP_GET / SSL_GET (keepalived.conf(5))
HTTP_STATUS_MIN = 100
HTTP_STATUS_MAX = 599
HTTP_DEFAULT_STATUS_MIN = 200  # a url without status_code accepts 200-299
HTTP_DEFAULT_STATUS_MAX = 299
HTTP_PROTOCOL = "1.0"  # keepalived's http_protocol default
HTTP_CHECK_LEVEL = "get"
CHECK_DELAY_LOOP_S = 60.0
CHECK_ALPHA = False  # without alpha a real server starts UP
CHECK_INHIBIT_ON_FAILURE = False  # True: a failed server stays with weight 0 instead of being removed
# warmup: None means keepalived's default, a random delay up to delay_loop before the first check.

# --- gridlb: section (what keepalived has no words for) -----------------------------------------
GRIDLB_DATAPLANE: Final = "auto"  # ipvs where the kernel has it and gridlb runs as root, else proxy
GRIDLB_CONTROL_SOCKET = "/run/gridlb/control.sock"
GRIDFTP_CHECK_LEVEL: Final = "banner"
GRIDFTP_CHECK_USER = "anonymous"
GRIDFTP_CHECK_PASSWORD = "gridlb@"
GRIDFTP_CHECK_DATA_ADDRESS = True
XROOTD_CHECK_LEVEL: Final = "connect"
XROOTD_CHECK_USER = "gridlb"
XROOTD_PORT = 1094
PASSIVE_RETRY_S: Final = 10.0  # a real server out by a passive failure is tried again after this
TIMEOUT_TCP_S: Final = 900  # the kernel's IPVS defaults (ipvsadm --set)
TIMEOUT_TCPFIN_S: Final = 120
TIMEOUT_UDP_S: Final = 300
TIMEOUT_MAX_S: Final = 2_147_483  # the kernel keeps timeouts in jiffies of an int
PROXY_CONNECT_TIMEOUT_S = 5.0
PROXY_WORKERS: Final = 1  # proxy relay workers: 1 in-process, more = worker processes ("auto" = per CPU)
PROXY_WORKERS_MAX: Final = 64

#: What the proxy answers a GridFTP client when no real server can take it (RFC 959 421).
GRIDFTP_UNAVAILABLE_REPLY = "421 Service not available: no GridFTP server is up behind this address"
#: At most this many data ports per GridFTP service (the proxy holds one listening socket per port).
GRIDFTP_DATA_PORTS_MAX = 4096

# --- gridlb.scaleout (BGP announcements through BIRD) -------------------------------------------
ASN_MAX: Final = 4_294_967_295  # 4-octet AS numbers (RFC 6793)
BGP_HOLD_TIME_MIN_S: Final = 3  # RFC 4271: 0 or at least 3 s; gridlb always keeps a hold timer
BGP_HOLD_TIME_MAX_S: Final = 65535
SCALEOUT_SPEAKER: Final = "bird"
SCALEOUT_HOLD_TIME_S: Final = 9  # keepalives every 3 s; BIRD's own default is 240 s
SCALEOUT_CHECK_INTERVAL_S: Final = 1.0  # how often the announcer re-reads the director's status
SCALEOUT_BIRD_CONFIG: Final = "/run/gridlb/bird.conf"
SCALEOUT_BIRD_SOCKET: Final = "/run/gridlb/bird.ctl"
