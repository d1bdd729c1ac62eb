// The seam between the Xen transport and Xen: the few calls of libxengnttab (with its
// xengntshr_* half), libxenevtchn and libxenstore that the transport makes, as a table
// of function pointers with the libraries' own C signatures. RealXenApi() fills it from
// the libraries; tests fill it from the test double (tests/xen/xen_double.h), so the
// same transport code runs in both.
#pragma once

#include <cstdint>

// Xen's tool headers have no extern "C" guards of their own.
extern "C" {
#include <xenevtchn.h>
#include <xengnttab.h>
#include <xenstore.h>
}

namespace xsock::backend::xen {

struct XenApi {
  // libxengnttab: mapping a peer's grants.
  xengnttab_handle* (*gnttab_open)(struct xentoollog_logger*, unsigned);
  int (*gnttab_close)(xengnttab_handle*);
  void* (*gnttab_map_grant_ref)(xengnttab_handle*, uint32_t domid, uint32_t ref, int prot);
  void* (*gnttab_map_grant_refs)(xengnttab_handle*, uint32_t count, uint32_t* domids,
                                 uint32_t* refs, int prot);
  int (*gnttab_unmap)(xengnttab_handle*, void* start, uint32_t count);
  // One page, with an unmap notification: when it is unmapped (or this process dies) the
  // kernel zeroes the byte at notify_offset and signals notify_port (-1: either not).
  void* (*gnttab_map_grant_ref_notify)(xengnttab_handle*, uint32_t domid, uint32_t ref, int prot,
                                       uint32_t notify_offset, evtchn_port_t notify_port);
  // libxengnttab: sharing own pages (frontends).
  xengntshr_handle* (*gntshr_open)(struct xentoollog_logger*, unsigned);
  int (*gntshr_close)(xengntshr_handle*);
  void* (*gntshr_share_pages)(xengntshr_handle*, uint32_t domid, int count, uint32_t* refs,
                              int writable);
  int (*gntshr_unshare)(xengntshr_handle*, void* start, uint32_t count);
  // One page shared with an unmap notification (as gnttab_map_grant_ref_notify).
  void* (*gntshr_share_page_notify)(xengntshr_handle*, uint32_t domid, uint32_t* ref, int writable,
                                    uint32_t notify_offset, evtchn_port_t notify_port);
  // libxenevtchn.
  xenevtchn_handle* (*evtchn_open)(struct xentoollog_logger*, unsigned);
  int (*evtchn_close)(xenevtchn_handle*);
  int (*evtchn_fd)(xenevtchn_handle*);
  int (*evtchn_notify)(xenevtchn_handle*, evtchn_port_t);
  xenevtchn_port_or_error_t (*evtchn_bind_unbound_port)(xenevtchn_handle*, uint32_t domid);
  xenevtchn_port_or_error_t (*evtchn_bind_interdomain)(xenevtchn_handle*, uint32_t domid,
                                                       evtchn_port_t remote_port);
  int (*evtchn_unbind)(xenevtchn_handle*, evtchn_port_t);
  xenevtchn_port_or_error_t (*evtchn_pending)(xenevtchn_handle*);
  int (*evtchn_unmask)(xenevtchn_handle*, evtchn_port_t);
  // libxenstore.
  struct xs_handle* (*xs_open)(unsigned long flags);
  void (*xs_close)(struct xs_handle*);
  void* (*xs_read)(struct xs_handle*, xs_transaction_t, const char* path, unsigned int* len);
  bool (*xs_write)(struct xs_handle*, xs_transaction_t, const char* path, const void* data,
                   unsigned int len);
  bool (*xs_rm)(struct xs_handle*, xs_transaction_t, const char* path);
  char** (*xs_directory)(struct xs_handle*, xs_transaction_t, const char* path, unsigned int* num);
  bool (*xs_watch)(struct xs_handle*, const char* path, const char* token);
  bool (*xs_unwatch)(struct xs_handle*, const char* path, const char* token);
  int (*xs_fileno)(struct xs_handle*);
  char** (*xs_check_watch)(struct xs_handle*);
  char** (*xs_read_watch)(struct xs_handle*, unsigned int* num);
};

// The table filled from the real libraries.
XenApi RealXenApi();

}  // namespace xsock::backend::xen
