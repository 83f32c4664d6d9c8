<?php
/**
 * Channel names and payloads: what a page follows, and what it receives there.
 *
 * Pure PHP (tests/contract.php checks them against tests/wordpress-vectors.json, which the app's
 * tests read too). A public post's channels are post:<ID>, comments:<ID> and liveblog:<ID>, open
 * to every reader; a post that is not public (draft, pending, private, scheduled, password-
 * protected) has the same names behind "private:", open only to a token that grants them.
 *
 * @package Realtime
 */

/** What a post's channels are called behind when the post is not public. */
const REALTIME_PRIVATE_PREFIX = 'private:';

/**
 * The channel of $kind (post, comments or liveblog) of post $post_id.
 *
 * @param string $kind    post, comments or liveblog.
 * @param int    $post_id The post's ID.
 * @param bool   $public  Whether the post is public (published, no password, a viewable type).
 */
function realtime_channel( string $kind, int $post_id, bool $public ): string {
	return ( $public ? '' : REALTIME_PRIVATE_PREFIX ) . $kind . ':' . $post_id;
}

/**
 * A post's state, for post:<ID>: what a page needs to say "updated" (or "gone").
 *
 * On a public channel, a post that is no longer public shows only its id, status and time.
 *
 * @param array $post      id, status, title (rendered), link, modified (ISO 8601, UTC).
 * @param bool  $withdrawn Whether this goes to the public channel of a post no longer public.
 */
function realtime_post_payload( array $post, bool $withdrawn = false ): array {
	return array(
		'type'     => 'post',
		'id'       => (int) $post['id'],
		'status'   => (string) $post['status'],
		'title'    => $withdrawn ? null : (string) $post['title'],
		'link'     => $withdrawn ? null : (string) $post['link'],
		'modified' => (string) $post['modified'],
	);
}

/**
 * A comment's change, for comments:<post ID>.
 *
 * @param string $action  approved, edited or removed.
 * @param array  $comment id, post, author (display name), content (rendered HTML).
 */
function realtime_comment_payload( string $action, array $comment ): array {
	$removed = 'removed' === $action;
	return array(
		'type'    => 'comment',
		'action'  => $action,
		'id'      => (int) $comment['id'],
		'post'    => (int) $comment['post'],
		'author'  => $removed ? null : (string) $comment['author'],
		'content' => $removed ? null : (string) $comment['content'],
	);
}

/**
 * A live-blog entry's change, for liveblog:<post ID>.
 *
 * @param string   $action   insert, update or delete.
 * @param array    $entry    id, post, content (rendered HTML).
 * @param int|null $replaces On update: the entry this one replaces (Liveblog gives it a new id).
 */
function realtime_liveblog_payload( string $action, array $entry, ?int $replaces = null ): array {
	return array(
		'type'     => 'liveblog',
		'action'   => $action,
		'id'       => (int) $entry['id'],
		'post'     => (int) $entry['post'],
		'content'  => 'delete' === $action ? null : (string) $entry['content'],
		'replaces' => $replaces,
	);
}
