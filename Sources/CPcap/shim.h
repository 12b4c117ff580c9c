#ifndef SWIFTVPNKIT_CPCAP_SHIM_H
#define SWIFTVPNKIT_CPCAP_SHIM_H
#include <pcap/pcap.h>
#endif
