# The shipped resource policy of tdx-kbs: a store key goes only to its own instance, only while
# the instance's measured owner is the admin key that uploaded it, on an accepted TCB status,
# never to a debug TD, and only to the TD image the broker pins (--mrtd-allowlist,
# --rtmr-allowlist: input.reference). Input document: apps/key-broker/README.md ("Policy input").
package policy

default allow := false

accepted_tcb_statuses := {"UpToDate"}

allow if {
	input.resource.repository == "tdx-identity"
	input.resource.type == "store-key"
	input.resource.tag == input.identity.instance_pubkey
	input.identity.owner != null
	input.identity.owner == input.resource.uploader
	input.tdx.tcb_status in accepted_tcb_statuses
	input.tdx.debug == false
	td_image_accepted
}

# The TD image: its MRTD and RTMR0-2 each in the broker's reference list. A null reference, or
# a null list, exists only under --any-measurement (development): then any value passes.
td_image_accepted if input.reference == null

td_image_accepted if {
	pinned("mr_td")
	pinned("rtmr0")
	pinned("rtmr1")
	pinned("rtmr2")
}

pinned(name) if input.reference[name] == null

pinned(name) if input.tdx[name] in input.reference[name]
