<?php
/**
 * Configuration: REALTIME_URL, PUBLISH_TOKEN and AUTH_SECRET, the same names as the app's.
 *
 * @package Realtime
 */

defined( 'ABSPATH' ) || exit;

/** Seconds a publish waits for the app by default (REALTIME_TIMEOUT; at most 2). */
const REALTIME_DEFAULT_TIMEOUT = 1.0;
/** Longest REALTIME_TIMEOUT accepted: the platform strongly discourages more than 3 s. */
const REALTIME_MAX_TIMEOUT = 2.0;

/**
 * A setting: vip_get_env_var() where it exists, else the process environment, else a constant.
 *
 * Never fatal: an unset name is the empty string.
 *
 * @param string $name REALTIME_URL, PUBLISH_TOKEN, AUTH_SECRET or REALTIME_TIMEOUT.
 * @return string The value, trimmed.
 */
function realtime_setting( string $name ): string {
	if ( function_exists( 'vip_get_env_var' ) ) {
		$value = (string) vip_get_env_var( $name, '' );
		if ( '' !== trim( $value ) ) {
			return trim( $value );
		}
	}
	$value = getenv( $name );
	if ( false !== $value && '' !== trim( $value ) ) {
		return trim( $value );
	}
	if ( defined( $name ) ) {
		return trim( (string) constant( $name ) );
	}
	return '';
}

/**
 * The app's base URL (no trailing slash) and publish token, or null when either is missing.
 *
 * @return array{url: string, token: string}|null
 */
function realtime_app(): ?array {
	$url   = untrailingslashit( realtime_setting( 'REALTIME_URL' ) );
	$token = realtime_setting( 'PUBLISH_TOKEN' );
	$parts = wp_parse_url( $url );
	$valid = is_array( $parts ) && isset( $parts['scheme'], $parts['host'] ) && in_array( $parts['scheme'], array( 'http', 'https' ), true );
	if ( '' === $token || ! $valid ) {
		return null;
	}
	return array(
		'url'   => $url,
		'token' => $token,
	);
}

/**
 * Seconds one publish may wait for the app: REALTIME_TIMEOUT, within (0, 2].
 */
function realtime_timeout(): float {
	$value = realtime_setting( 'REALTIME_TIMEOUT' );
	$value = '' === $value ? REALTIME_DEFAULT_TIMEOUT : (float) $value;
	return max( 0.1, min( REALTIME_MAX_TIMEOUT, $value ) );
}

/**
 * Missing configuration: one notice for those who can fix it, and the plugin does nothing.
 */
function realtime_admin_notice(): void {
	if ( null !== realtime_app() || ! current_user_can( 'manage_options' ) ) {
		return;
	}
	printf(
		'<div class="notice notice-warning"><p>%s</p></div>',
		esc_html__( 'Realtime: set REALTIME_URL and PUBLISH_TOKEN (environment variables or constants) to publish posts, comments and live-blog entries to the real-time app. Until then nothing is published.', 'realtime' )
	);
}
add_action( 'admin_notices', 'realtime_admin_notice' );
