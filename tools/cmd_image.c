/*
 * drivekit image: inspect and convert JPEG/PNG files.
 */
#include <getopt.h>
#include <string.h>

#include "cli.h"

static const char *usage =
    "drivekit image info FILE...\n"
    "       drivekit image convert IN OUT [--scale N/D | --min-size WxH] [--gray] [--quality Q]";

static void print_help(void)
{
    printf("usage: %s\n\n"
           "  info FILE...        format, size, channels and (JPEG) chroma subsampling\n"
           "  convert IN OUT      decode IN (JPEG or PNG, by content) and write OUT\n"
           "                      (.png, .jpg or .jpeg)\n"
           "options for convert:\n"
           "  --scale N/D         JPEG DCT-domain downscale, N/8 steps (1/8 .. 1/1); default 1/1\n"
           "  --min-size WxH      smallest JPEG scale whose output is at least WxH\n"
           "  --gray              decode to one gray channel\n"
           "  --quality Q         JPEG output quality 1..100; default 95\n",
           usage);
}

static int image_info(int argc, char **argv)
{
    if (argc < 2) return cli_usage_error("image info", usage, "no file given");
    int rc = CLI_OK;
    for (int i = 1; i < argc; i++) {
        uint8_t *data;
        size_t size;
        int st = dk_file_read(argv[i], &data, &size);
        if (st) {
            rc = cli_fail(st);
            continue;
        }
        if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) {
            dk_jpeg *j;
            dk_jpeg_info info;
            st = dk_jpeg_create(&j);
            if (!st) st = dk_jpeg_info_get(j, data, size, &info);
            if (st) {
                fprintf(stderr, "drivekit: %s: %s\n", argv[i], dk_errmsg());
                rc = CLI_FAIL;
            } else {
                printf("%s: JPEG %dx%d, %d channel(s), subsampling %d\n", argv[i], info.width,
                       info.height, info.colorspace == 1 ? 1 : 3, info.subsampling);
            }
            dk_jpeg_destroy(j);
        } else {
            dk_tensor img;
            st = dk_png_decode(data, size, DK_PIX_RGBA, &img);
            if (st) {
                fprintf(stderr, "drivekit: %s: %s\n", argv[i], dk_errmsg());
                rc = CLI_FAIL;
            } else {
                printf("%s: PNG %lldx%lld\n", argv[i], (long long)img.shape[1],
                       (long long)img.shape[0]);
                dk_tensor_release(&img);
            }
        }
        dk_free(data);
    }
    return rc;
}

static int image_convert(int argc, char **argv)
{
    static const struct option opts[] = {
        {"scale", required_argument, NULL, 's'}, {"min-size", required_argument, NULL, 'm'},
        {"gray", no_argument, NULL, 'g'},        {"quality", required_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0},
    };
    dk_jpeg_decode_opts o;
    dk_jpeg_decode_opts_init(&o);
    long quality = 95;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            if (cli_parse_fraction(optarg, &o.scale_num, &o.scale_den))
                return cli_usage_error("image convert", usage, "bad --scale '%s' (want N/D)", optarg);
            break;
        case 'm':
            if (cli_parse_size(optarg, &o.min_width, &o.min_height))
                return cli_usage_error("image convert", usage, "bad --min-size '%s' (want WxH)", optarg);
            break;
        case 'g': o.format = DK_PIX_GRAY; break;
        case 'q':
            if (cli_parse_int(optarg, 1, 100, &quality))
                return cli_usage_error("image convert", usage, "bad --quality '%s' (1..100)", optarg);
            break;
        case 'h': print_help(); return CLI_OK;
        default:
            return cli_usage_error("image convert", usage, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 2) return cli_usage_error("image convert", usage, "want IN and OUT");
    dk_tensor img;
    int st = dk_image_load(argv[optind], &o, &img);
    if (st) return cli_fail(st);
    st = dk_image_save(argv[optind + 1], &img, (int)quality);
    if (!st)
        printf("%s: %lldx%lld, %lld channel(s)\n", argv[optind + 1], (long long)img.shape[1],
               (long long)img.shape[0], (long long)img.shape[2]);
    dk_tensor_release(&img);
    return st ? cli_fail(st) : CLI_OK;
}

int cmd_image(int argc, char **argv)
{
    static const cli_subcommand subs[] = {{"info", image_info}, {"convert", image_convert}};
    return cli_dispatch("image", usage, print_help, subs, sizeof subs / sizeof subs[0], argc, argv);
}
