<?php
/**
 * The page side: live regions with their starting point, the app's client, and readers' tokens.
 *
 * @package Realtime
 */

defined( 'ABSPATH' ) || exit;

/** The kinds of channel a post's page follows. */
const REALTIME_KINDS = array( 'post', 'comments', 'liveblog' );

/**
 * The channels of $post, as its page follows them.
 *
 * @param WP_Post $post The post.
 * @return array<string, string> kind => channel.
 */
function realtime_post_channels( WP_Post $post ): array {
	$channels = array();
	foreach ( REALTIME_KINDS as $kind ) {
		$channels[ $kind ] = realtime_channel( $kind, $post->ID, realtime_is_public( $post ) );
	}
	return $channels;
}

/**
 * The post a page is about, when it should be live: a single post the plugin follows.
 */
function realtime_page_post(): ?WP_Post {
	if ( null === realtime_app() || ! is_singular() ) {
		return null;
	}
	$post = get_queried_object();
	return $post instanceof WP_Post && realtime_follows( $post ) ? $post : null;
}

/**
 * After the post's content: one live region per channel, with the id of the channel's newest
 * message when the page was made (data-last-id), so a reader of an edge-cached copy gets exactly
 * what was published since.
 *
 * @param string $content The post's content.
 */
function realtime_live_regions( string $content ): string {
	$post = realtime_page_post();
	if ( null === $post || ! in_the_loop() || ! is_main_query() || get_the_ID() !== $post->ID ) {
		return $content;
	}
	foreach ( realtime_post_channels( $post ) as $kind => $channel ) {
		$last_id  = realtime_last_id( $post->ID, $channel );
		$content .= sprintf(
			'<div class="realtime-live realtime-%1$s" aria-live="polite" data-channel="%2$s" data-last-id="%3$s"></div>',
			esc_attr( $kind ),
			esc_attr( $channel ),
			esc_attr( null === $last_id ? '' : (string) $last_id )
		);
	}
	return $content;
}
add_filter( 'the_content', 'realtime_live_regions', 20 );

/**
 * Enqueue the small page script (an ES module that imports the app's client) with its config.
 */
function realtime_enqueue(): void {
	$post = realtime_page_post();
	if ( null === $post ) {
		return;
	}
	$app    = realtime_app();
	$config = array(
		'socket'       => $app['url'] . '/_ws/wordpress',
		'client'       => $app['url'] . '/static/ws-client.js',
		'post'         => $post->ID,
		'postRest'     => rest_url( rest_get_route_for_post( $post ) ),
		'commentsRest' => add_query_arg( array( 'post' => $post->ID ), rest_url( 'wp/v2/comments' ) ),
		'pollSeconds'  => 10, // As Liveblog polls, when the socket cannot open.
		'tokenUrl'     => null,
		'nonce'        => null,
		'updated'      => __( 'This post was updated.', 'realtime' ),
		'reload'       => __( 'Reload', 'realtime' ),
	);
	// A private post's page (never edge-cached: its reader is logged in) asks for a token.
	if ( '' !== realtime_setting( 'AUTH_SECRET' ) && ( ! realtime_is_public( $post ) || is_user_logged_in() ) ) {
		$config['tokenUrl'] = add_query_arg( array( 'post' => $post->ID ), rest_url( 'realtime/v1/token' ) );
		$config['nonce']    = wp_create_nonce( 'wp_rest' );
	}
	wp_enqueue_script( 'realtime-live', plugins_url( 'live.js', __FILE__ ), array(), '1', true );
	wp_add_inline_script( 'realtime-live', 'window.realtimeConfig = ' . wp_json_encode( $config ) . ';', 'before' );
}
add_action( 'wp_enqueue_scripts', 'realtime_enqueue' );

/**
 * Load live.js as a module, which it is.
 *
 * @param string $tag    The script tag.
 * @param string $handle Its handle.
 */
function realtime_module_tag( string $tag, string $handle ): string {
	return 'realtime-live' === $handle ? str_replace( '<script ', '<script type="module" ', $tag ) : $tag;
}
add_filter( 'script_loader_tag', 'realtime_module_tag', 10, 2 );

/**
 * The token route: GET /wp-json/realtime/v1/token?post=<ID>, with the wp_rest nonce.
 */
function realtime_register_routes(): void {
	register_rest_route(
		'realtime/v1',
		'/token',
		array(
			'methods'             => 'GET',
			'callback'            => 'realtime_token_response',
			'permission_callback' => 'realtime_token_permission',
			'args'                => array(
				'post' => array(
					'required'          => true,
					'type'              => 'integer',
					'minimum'           => 1,
					'sanitize_callback' => 'absint',
				),
			),
		)
	);
}
add_action( 'rest_api_init', 'realtime_register_routes' );

/**
 * Who may have a token for a post's channels: a request with a valid wp_rest nonce, for a public
 * post, or from a user who can read the post.
 *
 * @param WP_REST_Request $request The request.
 * @return true|WP_Error
 */
function realtime_token_permission( WP_REST_Request $request ) {
	$nonce = (string) $request->get_header( 'X-WP-Nonce' );
	if ( ! wp_verify_nonce( $nonce, 'wp_rest' ) ) {
		return new WP_Error( 'realtime_nonce', __( 'A valid nonce is required.', 'realtime' ), array( 'status' => 403 ) );
	}
	$post = get_post( (int) $request['post'] );
	if ( ! $post instanceof WP_Post || ! realtime_follows( $post ) ) {
		return new WP_Error( 'realtime_post', __( 'No such post.', 'realtime' ), array( 'status' => 404 ) );
	}
	if ( ! realtime_is_public( $post ) && ! current_user_can( 'read_post', $post->ID ) ) {
		return new WP_Error( 'realtime_forbidden', __( 'You may not follow this post.', 'realtime' ), array( 'status' => rest_authorization_required_code() ) );
	}
	return true;
}

/**
 * A token for the post's channels, for this user (or an anonymous reader), for five minutes.
 *
 * @param WP_REST_Request $request The request.
 * @return WP_REST_Response|WP_Error
 */
function realtime_token_response( WP_REST_Request $request ) {
	$secret = realtime_setting( 'AUTH_SECRET' );
	if ( '' === $secret ) {
		return new WP_Error( 'realtime_config', __( 'AUTH_SECRET is not set.', 'realtime' ), array( 'status' => 503 ) );
	}
	$post    = get_post( (int) $request['post'] );
	$user_id = get_current_user_id();
	$claims  = realtime_reader_claims( $user_id ? 'user:' . $user_id : 'anonymous', array_values( realtime_post_channels( $post ) ), time() );
	$answer  = new WP_REST_Response(
		array(
			'token'   => realtime_mint_token( $secret, $claims ),
			'expires' => $claims['exp'],
		)
	);
	$answer->header( 'Cache-Control', 'no-store' );
	return $answer;
}
