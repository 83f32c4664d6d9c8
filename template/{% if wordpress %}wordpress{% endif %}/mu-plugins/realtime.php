<?php
/**
 * Plugin Name: Realtime
 * Description: Publishes posts, comments and Liveblog entries to the real-time app as they happen, and makes single posts live.
 * Requires PHP: 7.4
 *
 * The loader of a must-use plugin: WordPress loads only the top-level files of mu-plugins/.
 *
 * @package Realtime
 */

defined( 'ABSPATH' ) || exit;

require_once __DIR__ . '/realtime/config.php';
require_once __DIR__ . '/realtime/token.php';
require_once __DIR__ . '/realtime/channels.php';
require_once __DIR__ . '/realtime/publish.php';
require_once __DIR__ . '/realtime/outbox.php';
require_once __DIR__ . '/realtime/events.php';
require_once __DIR__ . '/realtime/page.php';
