# The shipped resource policy of tdx-kbs: a store key goes only to its own instance, only while
# the instance's measured owner is the admin key that uploaded it, on an accepted TCB status,
# never to a debug TD. Input document: apps/key-broker/README.md ("Policy input").
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
}
