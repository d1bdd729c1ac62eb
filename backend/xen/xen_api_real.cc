#include "backend/xen/xen_api.h"

namespace xsock::backend::xen {

XenApi RealXenApi() {
  XenApi api{};
  api.gnttab_open = xengnttab_open;
  api.gnttab_close = xengnttab_close;
  api.gnttab_map_grant_ref = xengnttab_map_grant_ref;
  api.gnttab_map_grant_refs = xengnttab_map_grant_refs;
  api.gnttab_unmap = xengnttab_unmap;
  api.gnttab_map_grant_ref_notify = xengnttab_map_grant_ref_notify;
  api.gntshr_open = xengntshr_open;
  api.gntshr_close = xengntshr_close;
  api.gntshr_share_pages = xengntshr_share_pages;
  api.gntshr_unshare = xengntshr_unshare;
  api.gntshr_share_page_notify = xengntshr_share_page_notify;
  api.evtchn_open = xenevtchn_open;
  api.evtchn_close = xenevtchn_close;
  api.evtchn_fd = xenevtchn_fd;
  api.evtchn_notify = xenevtchn_notify;
  api.evtchn_bind_unbound_port = xenevtchn_bind_unbound_port;
  api.evtchn_bind_interdomain = xenevtchn_bind_interdomain;
  api.evtchn_unbind = xenevtchn_unbind;
  api.evtchn_pending = xenevtchn_pending;
  api.evtchn_unmask = xenevtchn_unmask;
  api.xs_open = ::xs_open;
  api.xs_close = ::xs_close;
  api.xs_read = ::xs_read;
  api.xs_write = ::xs_write;
  api.xs_rm = ::xs_rm;
  api.xs_directory = ::xs_directory;
  api.xs_watch = ::xs_watch;
  api.xs_unwatch = ::xs_unwatch;
  api.xs_fileno = ::xs_fileno;
  api.xs_check_watch = ::xs_check_watch;
  api.xs_read_watch = ::xs_read_watch;
  return api;
}

}  // namespace xsock::backend::xen
