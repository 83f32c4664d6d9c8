<?php
/**
 * What is published, when: posts, comments and Liveblog entries, each to its post's channels.
 *
 * @package Realtime
 */

defined( 'ABSPATH' ) || exit;

/**
 * Whether readers who are not logged in may see $post: published, without a password, of a
 * type with public pages. Its channels are then public (channels.php).
 *
 * @param WP_Post $post The post.
 */
function realtime_is_public( WP_Post $post ): bool {
	return 'publish' === $post->post_status && '' === $post->post_password && is_post_type_viewable( $post->post_type );
}

/**
 * Whether $post is one whose changes are published at all (no revision, autosave, menu item...).
 *
 * @param WP_Post $post The post.
 */
function realtime_follows( WP_Post $post ): bool {
	return ! wp_is_post_revision( $post ) && ! wp_is_post_autosave( $post ) && 'auto-draft' !== $post->post_status
		&& is_post_type_viewable( $post->post_type );
}

/** Whether each post was public before the save under way (transition_post_status tells). */
$GLOBALS['realtime_was_public'] = array();

/**
 * Note whether a post was public before this save; wp_after_insert_post publishes it, once.
 *
 * @param string  $new_status The new status.
 * @param string  $old_status The old status.
 * @param WP_Post $post       The post.
 */
function realtime_note_transition( string $new_status, string $old_status, WP_Post $post ): void {
	$GLOBALS['realtime_was_public'][ $post->ID ] = 'publish' === $old_status && '' === $post->post_password;
}
add_action( 'transition_post_status', 'realtime_note_transition', 10, 3 );

/**
 * Publish a post's state when it is published, updated or unpublished (after its meta and
 * terms are saved): on its channel; when it stops being public, also "withdrawn" on the public one.
 *
 * @param int          $post_id     The post's ID.
 * @param WP_Post      $post        The post.
 * @param bool         $update      Whether it existed.
 * @param WP_Post|null $post_before The post before the save.
 */
function realtime_post_saved( int $post_id, WP_Post $post, bool $update, ?WP_Post $post_before ): void {
	if ( ! realtime_follows( $post ) ) {
		return;
	}
	$public     = realtime_is_public( $post );
	$was_public = $GLOBALS['realtime_was_public'][ $post_id ] ?? ( null !== $post_before && realtime_is_public( $post_before ) );
	unset( $GLOBALS['realtime_was_public'][ $post_id ] );
	$state = array(
		'id'       => $post_id,
		'status'   => $post->post_status,
		'title'    => get_the_title( $post ),
		'link'     => get_permalink( $post ),
		'modified' => mysql_to_rfc3339( $post->post_modified_gmt ),
	);
	$channel = realtime_channel( 'post', $post_id, $public );
	realtime_publish( $channel, realtime_post_payload( $state ), $post_id, $channel, $post );
	if ( $was_public && ! $public ) {
		$channel = realtime_channel( 'post', $post_id, true );
		realtime_publish( $channel, realtime_post_payload( $state, true ), $post_id, $channel, $post );
	}
}
add_action( 'wp_after_insert_post', 'realtime_post_saved', 10, 4 );

/**
 * Publish "withdrawn" on a public post's channel when the post is deleted for good.
 *
 * @param int     $post_id The post's ID.
 * @param WP_Post $post    The post.
 */
function realtime_post_deleted( int $post_id, WP_Post $post ): void {
	if ( ! realtime_follows( $post ) || ! realtime_is_public( $post ) ) {
		return;
	}
	$state   = array(
		'id'       => $post_id,
		'status'   => 'deleted',
		'title'    => '',
		'link'     => '',
		'modified' => gmdate( 'Y-m-d\TH:i:s\Z' ),
	);
	$channel = realtime_channel( 'post', $post_id, true );
	realtime_publish( $channel, realtime_post_payload( $state, true ), $post_id, $channel, $post );
}
add_action( 'before_delete_post', 'realtime_post_deleted', 10, 2 );

/**
 * Publish a comment's change on its post's comments channel; Liveblog's entries are not comments.
 *
 * @param string     $action  approved, edited or removed.
 * @param WP_Comment $comment The comment.
 */
function realtime_comment_changed( string $action, WP_Comment $comment ): void {
	$post = get_post( (int) $comment->comment_post_ID );
	if ( null === $post || 'liveblog' === $comment->comment_type || ! realtime_follows( $post ) ) {
		return;
	}
	$payload = realtime_comment_payload(
		$action,
		array(
			'id'      => (int) $comment->comment_ID,
			'post'    => $post->ID,
			'author'  => get_comment_author( $comment ),
			'content' => apply_filters( 'comment_text', get_comment_text( $comment ), $comment, array() ),
		)
	);
	realtime_publish( realtime_channel( 'comments', $post->ID, realtime_is_public( $post ) ), $payload, $post->ID, null, $comment );
}

/**
 * A comment inserted approved.
 *
 * @param int        $comment_id The comment's ID.
 * @param WP_Comment $comment    The comment.
 */
function realtime_comment_inserted( int $comment_id, WP_Comment $comment ): void {
	if ( '1' === (string) $comment->comment_approved ) {
		realtime_comment_changed( 'approved', $comment );
	}
}
add_action( 'wp_insert_comment', 'realtime_comment_inserted', 10, 2 );

/**
 * A comment approved, or no longer approved (unapproved, spam, trash, deleted).
 *
 * @param int|string $new_status The new status.
 * @param int|string $old_status The old status.
 * @param WP_Comment $comment    The comment.
 */
function realtime_comment_transition( $new_status, $old_status, WP_Comment $comment ): void {
	if ( 'approved' === $new_status ) {
		realtime_comment_changed( 'approved', $comment );
	} elseif ( 'approved' === $old_status ) {
		realtime_comment_changed( 'removed', $comment );
	}
}
add_action( 'transition_comment_status', 'realtime_comment_transition', 10, 3 );

/** Each comment's status before the edit under way (wp_update_comment_data tells). */
$GLOBALS['realtime_comment_was'] = array();

/**
 * Note a comment's status before an edit: edit_comment fires before the status transition.
 *
 * @param array $data    The new data.
 * @param array $comment The comment as it was.
 * @return array The data, unchanged.
 */
function realtime_note_comment_edit( $data, $comment ) {
	if ( is_array( $comment ) && isset( $comment['comment_ID'] ) ) {
		$GLOBALS['realtime_comment_was'][ (int) $comment['comment_ID'] ] = (string) $comment['comment_approved'];
	}
	return $data;
}
add_filter( 'wp_update_comment_data', 'realtime_note_comment_edit', 10, 2 );

/**
 * An approved comment edited (a change of status is the transition's).
 *
 * @param int $comment_id The comment's ID.
 */
function realtime_comment_edited( int $comment_id ): void {
	$was = $GLOBALS['realtime_comment_was'][ $comment_id ] ?? null;
	unset( $GLOBALS['realtime_comment_was'][ $comment_id ] );
	$comment = get_comment( $comment_id );
	if ( $comment instanceof WP_Comment && '1' === $was && '1' === (string) $comment->comment_approved ) {
		realtime_comment_changed( 'edited', $comment );
	}
}
add_action( 'edit_comment', 'realtime_comment_edited' );

/**
 * A Liveblog entry's change: Liveblog keeps entries as comments (or, in later versions, posts).
 *
 * @param string $action   insert, update or delete.
 * @param int    $entry_id The entry's ID (on update: the new entry's).
 * @param int    $post_id  The live blog's post ID.
 */
function realtime_liveblog_changed( string $action, $entry_id, $post_id ): void {
	$post = get_post( (int) $post_id );
	if ( null === $post || ! realtime_follows( $post ) ) {
		return;
	}
	$content  = '';
	$replaces = 0;
	$comment  = get_comment( (int) $entry_id );
	if ( $comment instanceof WP_Comment && 'liveblog' === $comment->comment_type ) {
		$content  = apply_filters( 'comment_text', $comment->comment_content, $comment, array() );
		$replaces = (int) get_comment_meta( $comment->comment_ID, 'liveblog_replaces', true );
	} elseif ( get_post( (int) $entry_id ) instanceof WP_Post ) {
		$content  = apply_filters( 'the_content', get_post_field( 'post_content', (int) $entry_id ) );
		$replaces = (int) get_post_meta( (int) $entry_id, 'liveblog_replaces', true );
	}
	$payload = realtime_liveblog_payload(
		$action,
		array(
			'id'      => (int) $entry_id,
			'post'    => $post->ID,
			'content' => $content,
		),
		empty( $replaces ) ? null : $replaces
	);
	realtime_publish( realtime_channel( 'liveblog', $post->ID, realtime_is_public( $post ) ), $payload, $post->ID, null, $post );
}
/**
 * Liveblog's hooks (liveblog_insert_entry, liveblog_update_entry, liveblog_delete_entry).
 *
 * @param int $entry_id The entry's ID.
 * @param int $post_id  The live blog's post ID.
 */
function realtime_liveblog_inserted( $entry_id, $post_id ): void {
	realtime_liveblog_changed( 'insert', $entry_id, $post_id );
}
add_action( 'liveblog_insert_entry', 'realtime_liveblog_inserted', 10, 2 );

/**
 * See realtime_liveblog_inserted().
 *
 * @param int $entry_id The new entry's ID.
 * @param int $post_id  The live blog's post ID.
 */
function realtime_liveblog_updated( $entry_id, $post_id ): void {
	realtime_liveblog_changed( 'update', $entry_id, $post_id );
}
add_action( 'liveblog_update_entry', 'realtime_liveblog_updated', 10, 2 );

/**
 * See realtime_liveblog_inserted().
 *
 * @param int $entry_id The entry's ID.
 * @param int $post_id  The live blog's post ID.
 */
function realtime_liveblog_deleted( $entry_id, $post_id ): void {
	realtime_liveblog_changed( 'delete', $entry_id, $post_id );
}
add_action( 'liveblog_delete_entry', 'realtime_liveblog_deleted', 10, 2 );
